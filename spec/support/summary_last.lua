-- busted output handler: one line per test, then the details of pendings,
-- failures and errors, and busted's summary line LAST (utfTerminal prints the
-- summary before the failure details, so a log's last line would not tell).
local pretty = require "pl.pretty"

return function(options)
    local busted = require "busted"
    local handler = require "busted.outputHandlers.base"()

    local function message_of(item)
        if type(item.message) == "string" then return item.message end
        if item.message == nil then return "Nil error" end
        return pretty.write(item.message)
    end

    local function describe_item(label, item)
        local out = label
        local trace = item.element and item.element.trace
        if trace and trace.short_src then
            out = out .. " -> " .. trace.short_src .. " @ " .. tostring(trace.currentline)
        end
        out = out .. "\n" .. tostring(item.name) .. "\n" .. message_of(item)
        if options.verbose and item.trace and item.trace.traceback then
            out = out .. "\n" .. item.trace.traceback
        end
        return out
    end

    local function plural(n, one, many)
        return n .. " " .. (n == 1 and one or many)
    end

    local function summary()
        local sec = string.format("%.6f", handler.getDuration()):gsub("([0-9])0+$", "%1")
        return plural(handler.successesCount, "success", "successes") .. " / "
            .. plural(handler.failuresCount, "failure", "failures") .. " / "
            .. plural(handler.errorsCount, "error", "errors") .. " / "
            .. handler.pendingsCount .. " pending : " .. sec .. " seconds"
    end

    handler.testEnd = function(element, _, status)
        local mark = ({ success = "ok  ", pending = "PEND", failure = "FAIL", error = "ERR " })[status]
            or status
        io.write(mark, " ", handler.getFullName(element), "\n")
        io.flush()
        return nil, true
    end

    handler.error = function(element)
        io.write("ERR  ", handler.getFullName(element), "\n")
        io.flush()
        return nil, true
    end

    handler.suiteEnd = function()
        for _, item in ipairs(handler.pendings) do
            io.write("\n", describe_item("Pending", item), "\n")
        end
        for _, item in ipairs(handler.failures) do
            io.write("\n", describe_item("Failure", item), "\n")
        end
        for _, item in ipairs(handler.errors) do
            io.write("\n", describe_item("Error", item), "\n")
        end
        io.write("\n", summary(), "\n")
        io.flush()
        return nil, true
    end

    busted.subscribe({ "test", "end" }, handler.testEnd, { predicate = handler.cancelOnPending })
    busted.subscribe({ "suite", "end" }, handler.suiteEnd)
    busted.subscribe({ "error", "file" }, handler.error)
    busted.subscribe({ "failure", "file" }, handler.error)
    busted.subscribe({ "error", "describe" }, handler.error)
    busted.subscribe({ "failure", "describe" }, handler.error)

    return handler
end
