local catalog = require "aws_masker.catalog"
local repeats = require "aws_masker.repeats"

describe("repeats", function()
  local cat

  setup(function()
    cat = assert(catalog.load(AWS_MASKER_TEST_CATALOG))
  end)

  local function spans(matches)
    local out = {}
    for i, m in ipairs(matches or {}) do
      out[i] = m.start .. "-" .. m.stop .. ":" .. m.code .. ":" .. m.value
    end
    return table.concat(out, " ")
  end

  -- A text whose values repeat with every kind of neighbour the boundary rule looks at.
  local function with_repeats(text, matches)
    local parts = { text }
    local seps = { " ", "_", ".", ".5", "x", "-", "/", "\"", "é", "9" }
    for i, m in ipairs(matches) do
      local sep = seps[i % #seps + 1]
      parts[#parts + 1] = sep .. m.value .. seps[(i * 7) % #seps + 1] .. " " .. m.value
    end
    return table.concat(parts, "\n")
  end

  it("finds the same occurrences word by word as with a find per original", function()
    local lfs = require "lfs"
    local corpus = AWS_MASKER_TEST_DIR .. "/../../../shared/corpus/real"
    local files, added = 0, 0
    if lfs.attributes(corpus, "mode") == "directory" then
      for name in lfs.dir(corpus) do
        if name:sub(1, 1) ~= "." and not name:find("%.expect%.json$") then
          local f = assert(io.open(corpus .. "/" .. name, "rb"))
          local text = f:read("*a")
          f:close()
          local matches = cat:scan(text)
          if matches then
            text = with_repeats(text, matches)
            matches = cat:scan(text)
            local each = repeats.extend(repeats.new(matches, math.huge), text, matches)
            local words = repeats.extend(repeats.new(matches, 0), text, matches)
            assert.equal(spans(each), spans(words), name)
            added = added + #each - #matches
            files = files + 1
          end
        end
      end
    end
    assert.is_true(files > 10)
    assert.is_true(added > 100)
  end)

  it("keeps the longer of two overlapping originals, the leftmost first", function()
    for _, up_to in ipairs({ 0, math.huge }) do
      local set = repeats.new({
        { value = "10.0.0.1", name = "private_ipv4", code = "PRIVATE_IP" },
        { value = "10.0.0.1:8080", name = "x", code = "X" },
        { value = "/aws/lambda/fn", name = "log_group_path", code = "LOG_GROUP" },
      }, up_to)
      local m = repeats.extend(set, "at 10.0.0.1:8080 or 10.0.0.1 in /aws/lambda/fn.", nil)
      assert.equal("4-16:X:10.0.0.1:8080 21-28:PRIVATE_IP:10.0.0.1 "
        .. "33-46:LOG_GROUP:/aws/lambda/fn", spans(m))
      assert.is_nil(repeats.extend(set, "short", nil))
      assert.is_nil(repeats.extend(set, "10.0.0.12 10.0.0.10 110.0.0.1 10.0.0.1.2 1.10.0.0.1",
        nil))
    end
  end)

  it("finds an original from its rarest byte at any place, overlapping ones included", function()
    local rarest = require "aws_masker.rarest"
    assert.equal(10, rarest.offset("vpc-a01106c2")) -- the "6": no byte is rarer
    assert.equal(1, rarest.offset("AKIA"))
    assert.equal(4, rarest.offset("arn:aws", 3)) -- ":aws"
    assert.equal(1, rarest.offset("i-", 3)) -- shorter than 3: all of it
    local found = { { start = 1, stop = 3, name = "n", code = "C", value = "x3x" } }
    local set = repeats.new(found)
    -- the key "3x" stands at the very start and right after the first byte
    local m = repeats.extend(set, "3x x3x3x x3x", nil)
    assert.equal("10-12:C:x3x", spans(m))
    m = repeats.extend(set, "x3x", nil)
    assert.equal("1-3:C:x3x", spans(m))
  end)

  it("returns the catalog's own matches when it adds nothing", function()
    local text = "account 123456789012"
    local matches = cat:scan(text)
    assert.equal(matches, repeats.extend(repeats.new(matches), text, matches))
  end)
end)
