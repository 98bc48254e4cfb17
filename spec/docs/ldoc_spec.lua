-- The API page (`make docs`: LDoc with config.ld) renders without a warning and is
-- complete: every configuration field the core reads (src/lua_config.cpp), typed;
-- new and the four instance methods with typed parameters and returns; and only the
-- public module (the cosocket driver is internal).
local nginx = require "nginx"

local root = nginx.root

local function read(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("*a")
    f:close()
    return data
end

local function ldoc_available()
    return os.execute("command -v ldoc >/dev/null 2>&1") == 0
end

-- The configuration fields the core reads, from kFields in src/lua_config.cpp.
local function core_fields()
    local source = read(root .. "/src/lua_config.cpp")
    local list = assert(source:match("kFields%[%]%s*=%s*(%b{})"), "kFields not found")
    local fields = {}
    for name in list:gmatch('"([%w_]+)"') do fields[#fields + 1] = name end
    assert(#fields > 10, "too few fields parsed from kFields")
    return fields
end

describe("API documentation (LDoc)", function()
    local page, files, out

    lazy_setup(function()
        if not ldoc_available() then return end
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
        local p = assert(io.popen("cd '" .. root .. "' && ldoc --fatalwarnings -d '" .. dir .. "' . 2>&1; echo rc=$?"))
        out = p:read("*a")
        p:close()
        page = io.open(dir .. "/index.html", "rb") and read(dir .. "/index.html")
        local ls = assert(io.popen("cd '" .. dir .. "' && find . -type f | sort"))
        files = ls:read("*a")
        ls:close()
        os.execute("rm -rf '" .. dir .. "'")
    end)

    local function check(name, fn)
        it(name, function()
            if not ldoc_available() then
                pending("skipped: ldoc not found (apt-get install lua-ldoc lua-discount)")
            end
            fn()
        end)
    end

    check("renders without warnings", function()
        assert.matches("rc=0%s*$", out)
        assert.is_string(page)
    end)

    check("documents every configuration field with its type", function()
        local fields = page:match('<a name = "configuration"></a>(.-)</dl>')
        assert.is_string(fields, "no configuration table on the page")
        for _, name in ipairs(core_fields()) do
            local entry = fields:match('<li><span class="parameter">' .. name .. '</span>(.-)</li>')
            assert.is_string(entry, "field not documented: " .. name)
            assert.matches('class="types"', entry, "field without a type: " .. name)
            assert.matches("default", entry, "field without its default: " .. name)
        end
    end)

    check("documents new and set, get, delete, read_metadata with typed parameters and returns", function()
        for _, name in ipairs({ "new", "instance:set", "instance:get", "instance:delete",
                                "instance:read_metadata" }) do
            local entry = page:match('<a name = "' .. name:gsub("%p", "%%%0") .. '"></a>(.-)</dd>')
            assert.is_string(entry, "not documented: " .. name)
            assert.matches("<h3>Parameters:</h3>", entry, name)
            assert.matches('class="types"', entry, name)
            assert.matches("<h3>Returns:</h3>", entry, name)
        end
    end)

    check("presents only the public module", function()
        assert.equal("./index.html\n./ldoc.css\n", files)
        assert.matches("<h1>Module <code>resty.session.hiredis</code></h1>", page, nil, true)
        assert.is_nil(page:find("Module <code>resty.session.hiredis.cosocket", 1, true))
    end)
end)
