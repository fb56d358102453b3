local catalog = require "aws_masker.catalog"

describe("catalog", function()
  local cat

  setup(function()
    local err
    cat, err = catalog.load(AWS_MASKER_TEST_CATALOG)
    assert.is_nil(err)
  end)

  it("masks every example of the shipped catalog, no counterexample of the entry", function()
    local doc = require("cjson").decode(io.open(AWS_MASKER_TEST_CATALOG):read("*a"))
    for _, p in ipairs(doc.patterns) do
      for _, ex in ipairs(p.examples or {}) do
        -- masked by its own entry or an earlier one at the same place (priority)
        local m = cat:scan(ex)
        assert.is_table(m, p.name .. " misses " .. ex)
        for _, x in ipairs(m) do
          assert.truthy(ex:find(x.value, 1, true))
        end
      end
      for _, ex in ipairs(p.counterexamples or {}) do
        local m = cat:scan(ex)
        local hit = false
        for _, x in ipairs(m or {}) do
          if x.name == p.name then hit = true end
        end
        assert.is_false(hit, p.name .. " matches counterexample " .. ex)
      end
    end
  end)

  it("reports offsets, names and codes in text order", function()
    local text = "i-0a1b2c3d on 10.0.1.5 in vpc-a01106c2"
    local m = cat:scan(text)
    assert.equal(3, #m)
    assert.same({ 1, 10, "ec2_instance_id", "EC2", "i-0a1b2c3d" },
      { m[1].start, m[1].stop, m[1].name, m[1].code, m[1].value })
    assert.equal("10.0.1.5", text:sub(m[2].start, m[2].stop))
    assert.equal("PRIVATE_IP", m[2].code)
    assert.equal("VPC", m[3].code)
  end)

  it("returns nil for text without identifiers", function()
    assert.is_nil(cat:scan("nothing to see, multi-tenant i-18n"))
    assert.is_nil(cat:scan(""))
  end)

  it("runs no regex on a text holding none of the literals, and finds nothing there", function()
    local quiet = assert(catalog.load(AWS_MASKER_TEST_CATALOG))
    quiet.regexes = setmetatable({}, { __index = function(_, i)
      error("pattern " .. quiet.names[i] .. " was searched")
    end })
    for _, text in ipairs({ "", "ok", "Thanks, all good!", "2 + 2 = 4, right?" }) do
      assert.equal(0, quiet:candidates(text), text)
      assert.is_nil(quiet:scan(text), text)
    end
    assert.has_error(function() quiet:scan("vpc-a01106c2") end)
  end)

  it("searches a pattern only in texts holding one of its literals, in any case", function()
    local function active(text)
      local names = {}
      for k = 1, cat:candidates(text) do
        names[cat.names[cat.active[k]]] = true
      end
      return names
    end
    assert.is_nil(active("a VPC, no id")["vpc_id"])
    assert.is_true(active("a VPC-a01106c2")["vpc_id"])
    assert.is_true(active("SECRET_ACCESS_KEY")["secret_access_key"])
    -- found in one text, the literal does not make the next text searched
    assert.is_true(active("arn:aws:iam::123456789012:role/Admin")["arn"])
    assert.is_nil(active("role/Admin")["arn"])
    -- split across two texts, each scanned alone: neither holds an ARN
    assert.is_nil(cat:scan("see arn:"))
    assert.is_nil(cat:scan("aws:iam::123456789012:role/Admin"))
  end)

  it("rejects literals that are not a list of non-empty strings", function()
    local entry = { name = "x", token = "X", regex = "x-[0-9]+", literals = { "x-", "" } }
    local c, err = catalog.new({ version = 1, patterns = { entry } })
    assert.is_nil(c)
    assert.matches("literal", err)
    entry.literals = { "x-", 5 }
    c, err = catalog.new({ version = 1, patterns = { entry } })
    assert.is_nil(c)
    assert.matches("literal", err)
    entry.literals = "x-"
    c, err = catalog.new({ version = 1, patterns = { entry } })
    assert.is_nil(c)
    assert.matches("literal", err)
  end)

  it("prefers the earlier pattern at the same offset", function()
    local c = assert(catalog.new({ version = 1, patterns = {
      { name = "first", token = "ONE", regex = [[ab]] },
      { name = "second", token = "TWO", regex = [[abc]] },
    } }))
    local m = c:scan("xabc")
    assert.equal("ONE", m[1].code)
    assert.equal(2, m[1].start)
  end)

  it("masks only the value group, which ends the match", function()
    local c = assert(catalog.new({ version = 1, patterns = {
      { name = "secret", token = "SECRET", value_group = "secret",
        regex = [[(?i:secret_key)\s*=\s*(?P<secret>[A-Za-z0-9/+]{8,})]] },
    } }))
    local text = "SECRET_KEY = abcdEFGH1234 ok"
    local m = c:scan(text)
    assert.equal("abcdEFGH1234", m[1].value)
    assert.equal("abcdEFGH1234", text:sub(m[1].start, m[1].stop))
  end)

  it("works on bytes: UTF-8 around identifiers does not matter", function()
    local m = cat:scan("é i-0a1b2c3d → 😀10.1.2.3")
    assert.equal("i-0a1b2c3d", m[1].value)
    assert.equal("10.1.2.3", m[2].value)
  end)

  it("rejects a bad catalog with a reason", function()
    local c, err = catalog.new({ version = 1, patterns = {
      { name = "x", token = "bad code", regex = "x" } } })
    assert.is_nil(c)
    assert.matches("token code", err)
    c, err = catalog.new({ version = 1, patterns = {
      { name = "x", token = "X", regex = "(" } } })
    assert.is_nil(c)
    assert.matches("does not compile", err)
    c, err = catalog.new({ version = 2, patterns = {} })
    assert.is_nil(c)
    assert.is_string(err)
  end)

  it("finds exactly what the single alternation finds, on the corpus and generated text", function()
    local function same(text, where)
      local a = cat:scan(text) or {}
      local b = cat:scan_alternation(text) or {}
      assert.equal(#b, #a, where)
      for i = 1, #b do
        if a[i].start ~= b[i].start or a[i].stop ~= b[i].stop or a[i].name ~= b[i].name then
          assert.same(b[i], a[i], where .. " match " .. i)
        end
      end
      return #a
    end

    local lfs = require "lfs"
    local corpus = AWS_MASKER_TEST_DIR .. "/../../../shared/corpus"
    local files, found = 0, 0
    for _, dir in ipairs({ "real", "negative" }) do
      local path = corpus .. "/" .. dir
      if lfs.attributes(path, "mode") == "directory" then
        for name in lfs.dir(path) do
          if name:sub(1, 1) ~= "." and not name:find("%.expect%.json$") then
            local f = io.open(path .. "/" .. name, "rb")
            if f then
              found = found + same(f:read("*a"), name)
              f:close()
              files = files + 1
            end
          end
        end
      end
    end

    -- generated: examples glued together in random orders and separators
    local doc = require("cjson").decode(io.open(AWS_MASKER_TEST_CATALOG):read("*a"))
    local pieces = { " ", "-", "/", ":", "\n", "\"", "x", "0", ".", "é", "=" }
    for _, p in ipairs(doc.patterns) do
      for _, ex in ipairs(p.examples or {}) do pieces[#pieces + 1] = ex end
      for _, ex in ipairs(p.counterexamples or {}) do pieces[#pieces + 1] = ex end
    end
    math.randomseed(7)
    for run = 1, 300 do
      local parts = {}
      for k = 1, math.random(1, 30) do
        parts[k] = pieces[math.random(#pieces)]
      end
      found = found + same(table.concat(parts), "generated run " .. run)
    end
    assert.is_true(found > 0)
  end)
end)
