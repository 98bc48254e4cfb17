# The benchmark's chart: throughput and storage CPU per request for each row
# (workers, op, connections), upstream / hiredis cosocket (pipelining on, the default) /
# hiredis cosocket with pipelining = false / hiredis native side by side ("-" = not measured).
#   gnuplot -e "datafile='bench/results/chart.dat'; outfile='bench/results/results.png'" bench/chart.gp
set terminal pngcairo size 1800,1100 font "sans,10" noenhanced
set output outfile
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set rmargin 12
set grid ytics
set yrange [0:*]
set key top left
set xtics rotate by -45 scale 0
set multiplot layout 2,1 title "resty.session storage: upstream resty.session.redis vs resty.session.hiredis (one storage call per HTTP request)"
set title "Throughput (requests/s, higher is better)"
set ylabel "requests/s"
plot datafile using 2:xtic(1) title "upstream" lc rgb "#888888", \
     '' using 3 title "hiredis cosocket" lc rgb "#1f77b4", \
     '' using 4 title "hiredis cosocket, pipelining = false" lc rgb "#9ecae1", \
     '' using 5 title "hiredis native" lc rgb "#ff7f0e"
set title "Storage CPU per request (nginx workers' CPU minus the no-op handler's, µs, lower is better)"
set ylabel "µs per request"
plot datafile using 6:xtic(1) title "upstream" lc rgb "#888888", \
     '' using 7 title "hiredis cosocket" lc rgb "#1f77b4", \
     '' using 8 title "hiredis cosocket, pipelining = false" lc rgb "#9ecae1", \
     '' using 9 title "hiredis native" lc rgb "#ff7f0e"
unset multiplot
