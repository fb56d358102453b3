local catalog = require "aws_masker.catalog"
local json_body = require "aws_masker.json_body"
local json_string = require "aws_masker.json_string"
local thinking = require "aws_masker.thinking"

-- Tokens as the store would issue them, numbered by first appearance.
local function fake_tokens(plan)
  local tokens, seq = {}, {}
  for i, f in ipairs(plan.findings) do
    seq[f.code] = (seq[f.code] or 0) + 1
    tokens[i] = string.format("AWS_%s_%06d", f.code, seq[f.code])
  end
  return tokens
end

-- Masks raw with a compiled catalog and sequential fake tokens; returns the body and the plan.
local function mask_with(cat, raw)
  local plan, err = json_body.scan(raw, cat)
  assert.is_nil(err)
  return json_body.rewrite(plan, fake_tokens(plan)), plan
end

describe("json_body", function()
  local cat
  local function mask(raw) return mask_with(cat, raw) end

  setup(function()
    cat = assert(catalog.load(AWS_MASKER_TEST_CATALOG))
  end)

  it("rewrites only identifiers and keeps every other byte", function()
    local raw = '{ "model" : "claude-x",\n  "max_tokens":1.50E+3, "big": 12345678901234567890123,'
      .. '\t"messages":[{"role":"user","content":"stop i-0a1b2c3d now \\u00e9\\/"}],'
      .. ' "other": "caf\\u00e9 \\ud83d\\ude00", "n": [1, -0.0, true, null] }'
    local out = mask(raw)
    local expected = raw:gsub("i%-0a1b2c3d", "AWS_EC2_000001")
    -- the changed string is re-encoded (its escapes become bytes), everything else is as sent
    expected = expected:gsub('now \\u00e9\\/"', 'now é/"')
    assert.equal(expected, out)
  end)

  it("leaves a body without identifiers untouched and finds nothing", function()
    local raw = '{"model":"m","messages":[{"role":"user","content":"hello \\"world\\""}]}'
    local out, plan = mask(raw)
    assert.equal(raw, out)
    assert.equal(0, #plan.findings)
  end)

  it("finds identifiers hidden behind escapes and astral characters", function()
    local raw = '{"content":"\\ud83d\\ude00i\\u002d0a1b2c3d\\nvpc-a01106c2\\u2028"}'
    local out = mask(raw)
    local doc = require("cjson").decode(out)
    assert.equal("😀AWS_EC2_000001\nAWS_VPC_000001\226\128\168", doc.content)
  end)

  it("finds an identifier whose literal the raw body writes split by an escape", function()
    -- the raw text holds neither "arn:aws" nor "i-": only the decoded strings do
    local raw = '{"content":"arn\\u003aaws:iam::123456789012:role/Admin i\\u002d0a1b2c3d",'
      .. '"system":"x\\\\\\"arn:aws:s3:::my-bucket\\\\"}'
    local out = mask(raw)
    local doc = require("cjson").decode(out)
    assert.equal("AWS_ARN_000001 AWS_EC2_000001", doc.content)
    assert.equal("x\\\"AWS_ARN_000002\\", doc.system)
  end)

  it("finds a value whose literal only its key holds", function()
    -- "secret" stands in the key, not in the value scanned alone
    local raw = '{"input":{"SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}'
    local plan = assert(json_body.scan(raw, cat))
    assert.equal(1, #plan.findings)
    assert.equal("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", plan.findings[1].value)
  end)

  it("refuses a lone surrogate (cjson does not accept it)", function()
    local plan, err = json_body.scan('{"content":"\\ud800 i-0a1b2c3d"}', cat)
    assert.is_nil(plan)
    assert.matches("malformed JSON", err)
  end)

  it("gives one original one token within a body", function()
    local raw = '{"a":"i-0a1b2c3d","b":["i-0a1b2c3d 10.0.0.1"]}'
    local out, plan = mask(raw)
    assert.equal(2, #plan.findings)
    assert.equal('{"a":"AWS_EC2_000001","b":["AWS_EC2_000001 AWS_PRIVATE_IP_000001"]}', out)
  end)

  it("does not touch structural values, assistant thinking blocks nor base64 data", function()
    local raw = '{"model":"claude-x","messages":[{"role":"assistant","content":['
      .. '{"type":"thinking","thinking":"AWS_EC2_000009","signature":"c2ln"},'
      .. '{"signature":"x","thinking":"AWS_EC2_000008 first","type":"thinking"},'
      .. '{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix/LafPsn4a"}]},'
      .. '{"role":"user","content":['
      .. '{"type":"image","source":{"type":"base64","media_type":"image/png",'
      .. '"data":"aS0wYTFiMmMzZA=="}},'
      .. '{"type":"document","source":{"type":"text","data":"i-0a1b2c3d"}},'
      .. '{"type":"tool_result","tool_use_id":"toolu_1","content":"i-0a1b2c3d"}]}]}'
    local out = mask(raw)
    local doc = require("cjson").decode(out)
    local blocks = doc.messages[1].content
    assert.equal("claude-x", doc.model)
    assert.equal("AWS_EC2_000009", blocks[1].thinking)
    assert.equal("c2ln", blocks[1].signature)
    assert.equal("AWS_EC2_000008 first", blocks[2].thinking)
    assert.equal("EmwKAhgBEgy3va3pzix/LafPsn4a", blocks[3].data)
    blocks = doc.messages[2].content
    assert.equal("aS0wYTFiMmMzZA==", blocks[1].source.data)
    assert.equal("AWS_EC2_000001", blocks[2].source.data)
    assert.equal("toolu_1", blocks[3].tool_use_id)
    assert.equal("AWS_EC2_000001", blocks[3].content)
  end)

  it("masks a thinking block anywhere but in an assistant turn's content", function()
    local raw = '{"system":[{"type":"thinking","thinking":"i-0a1b2c3d"}],'
      .. '"messages":[{"role":"user","content":[{"type":"thinking","thinking":"vpc-a01106c2"},'
      .. '{"type":"redacted_thinking","data":"sg-903004f8"}]}]}'
    local doc = require("cjson").decode((mask(raw)))
    assert.equal("AWS_EC2_000001", doc.system[1].thinking)
    assert.equal("AWS_VPC_000001", doc.messages[1].content[1].thinking)
    assert.equal("AWS_SG_000001", doc.messages[1].content[2].data)
  end)

  it("refuses an identifier in an API field, which it never rewrites", function()
    for _, raw in ipairs({
      '{"model":"arn:aws:iam::123456789012:role/Admin","messages":[]}',
      '{"messages":[{"role":"user","content":[{"type":"tool_result",'
        .. '"tool_use_id":"i-0a1b2c3d","content":"x"}]}]}',
      '{"messages":[{"role":"user","content":[{"type":"thinking","thinking":"x",'
        .. '"signature":"i-0a1b2c3d"}]}]}',
      '{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64",'
        .. '"media_type":"image/png","data":"see i-0a1b2c3d"}}]}]}',
    }) do
      local plan, err, client_error = json_body.scan(raw, cat)
      assert.is_nil(plan)
      assert.is_true(client_error)
      assert.not_matches("i%-0a1b2c3d", err)
      assert.not_matches("123456789012", err)
    end
  end)

  it("masks a value its key names, as in the same pair written inside a string", function()
    local raw = '{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t",'
      .. '"name":"n","input":{"SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",'
      .. '"count":"555566667777","OwnerId":"123456789012 i-0a1b2c3d"}}]}],'
      .. '"metadata":{"accountId":"111122223333"},"text":"555566667777"}'
    local doc = require("cjson").decode((mask(raw)))
    local input = doc.messages[1].content[1].input
    assert.equal("AWS_SECRET_KEY_000001", input.SecretAccessKey)
    assert.equal("555566667777", input.count)
    assert.equal("AWS_ACCOUNT_000001 AWS_EC2_000001", input.OwnerId)
    assert.equal("AWS_ACCOUNT_000002", doc.metadata.accountId)
    assert.equal("555566667777", doc.text)

    -- The key's pattern wins over a shorter shape at the start of the value, as in a string.
    raw = '{"input":{"secret_key":"AKIAIOSFODNN7EXAMPLE/K7MDENG/bPxRfiCYEXAMPLEKEY i-0a1b2c3d"}}'
    doc = require("cjson").decode((mask(raw)))
    assert.equal("AWS_SECRET_KEY_000001 AWS_EC2_000001", doc.input.secret_key)
  end)

  it("refuses a number its key names as an identifier, and passes other numbers", function()
    local plan, err, client_error = json_body.scan('{"input":{"OwnerId" : 123456789012}}', cat)
    assert.is_nil(plan)
    assert.is_true(client_error)
    assert.matches("JSON number", err, 1, true)
    local raw = '{"max_tokens":1024,"input":{"count":123456789012,"x":-1.5e+3}}'
    assert.equal(raw, (mask(raw)))
  end)

  it("refuses a key twice in one object, whose first value cjson would hide", function()
    local raw = '{"metadata":{"a":{"type":"text","text":"i-0a1b2c3d"},"a":{"type":"thinking"}}}'
    local plan, err, client_error = json_body.scan(raw, cat)
    assert.is_nil(plan)
    assert.is_true(client_error)
    assert.matches("malformed JSON body: duplicate key", err, 1, true)
    assert.is_table(json_body.scan('{"a":{"k":1},"b":{"k":2},"k":[{"k":3},{"k":4}]}', cat))
  end)

  it("masks keys and structural-looking keys inside tool input like values", function()
    local raw = '{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1",'
      .. '"name":"stop","input":{"i-0a1b2c3d":"running","id":"i-0b1b2c3d",'
      .. '"nested":{"type":"thinking","thinking":"sg-903004f8"}}}]}],'
      .. '"system":[{"type":"text","text":"VPC vpc-a01106c2"}],'
      .. '"tools":[{"name":"t","input_schema":{"type":"object","properties":{'
      .. '"i-22222222":{"type":"string"}}}}]}'
    local out = mask(raw)
    local doc = require("cjson").decode(out)
    local input = doc.messages[1].content[1].input
    assert.equal("running", input.AWS_EC2_000001)
    assert.equal("AWS_EC2_000002", input.id)
    assert.equal("AWS_SG_000001", input.nested.thinking)
    assert.equal("toolu_1", doc.messages[1].content[1].id)
    assert.equal("VPC AWS_VPC_000001", doc.system[1].text)
    assert.is_table(doc.tools[1].input_schema.properties.AWS_EC2_000003)
  end)

  it("masks text that already looks like a token", function()
    local out = mask('{"content":"AWS_EC2_000001"}')
    assert.equal('{"content":"AWS_TOKEN_000001"}', out)
  end)

  it("rejects malformed JSON, NaN and trailing garbage", function()
    for _, raw in ipairs({ '{"a":', '{"a":NaN}', '{"a":1} x', '', '{"a":0x10}' }) do
      local plan, err = json_body.scan(raw, cat)
      assert.is_nil(plan)
      assert.matches("malformed JSON", err)
    end
  end)

  it("masks a top-level string and arrays", function()
    assert.equal('"AWS_EC2_000001"', (mask('"i-0a1b2c3d"')))
    assert.equal('[1,"AWS_EC2_000001",{}]', (mask('[1,"i-0a1b2c3d",{}]')))
  end)
end)

describe("json_body repeated originals", function()
  local cjson = require "cjson"
  local cat
  local function mask(raw) return mask_with(cat, raw) end

  setup(function()
    cat = assert(catalog.load(AWS_MASKER_TEST_CATALOG))
  end)

  local function user(text)
    return '{"messages":[{"role":"user","content":' .. cjson.encode(text) .. '}]}'
  end

  it("masks an original again in the same string, before and after its context", function()
    local doc = cjson.decode((mask(user(
      "The CloudTrail trail is 493827165012 wide per account 493827165012."))))
    assert.equal("The CloudTrail trail is AWS_ACCOUNT_000001 wide per account AWS_ACCOUNT_000001.",
      doc.messages[1].content)
  end)

  it("masks it in other messages, an assistant turn, tool input keys and values, system",
    function()
      local raw = '{"system":"Owned by 493827165012 (prod).","messages":['
        .. '{"role":"user","content":"account 493827165012: tag it"},'
        .. '{"role":"assistant","content":[{"type":"text","text":"the owning one is 493827165012"},'
        .. '{"type":"tool_use","id":"toolu_1","name":"tag","input":{"target":"493827165012",'
        .. '"493827165012":["x 493827165012"]}},'
        .. '{"type":"thinking","thinking":"AWS_ACCOUNT_000001","signature":"s"}]},'
        .. '{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1",'
        .. '"content":"tagged 493827165012"}]}]}'
      local out, plan = mask(raw)
      assert.equal(1, #plan.findings)
      local doc = cjson.decode(out)
      local turn = doc.messages[2].content
      assert.equal("Owned by AWS_ACCOUNT_000001 (prod).", doc.system)
      assert.equal("account AWS_ACCOUNT_000001: tag it", doc.messages[1].content)
      assert.equal("the owning one is AWS_ACCOUNT_000001", turn[1].text)
      assert.equal("AWS_ACCOUNT_000001", turn[2].input.target)
      assert.same({ "x AWS_ACCOUNT_000001" }, turn[2].input.AWS_ACCOUNT_000001)
      assert.equal("AWS_ACCOUNT_000001", turn[3].thinking) -- assistant thinking passes as sent
      assert.equal("tagged AWS_ACCOUNT_000001", doc.messages[3].content[1].content)

      -- The value found elsewhere, in a thinking block, which is never rewritten: the block
      -- passes only if the gateway delivered it (its digest is looked up), and as it came.
      local seen = raw:gsub('"thinking":"AWS_ACCOUNT_000001"', '"thinking":"see 493827165012"')
      local out2, plan2 = mask(seen)
      assert.same({ thinking.block_digest({ type = "thinking", thinking = "see 493827165012",
        signature = "s" }) }, plan2.digests)
      assert.equal("see 493827165012", cjson.decode(out2).messages[2].content[3].thinking)
      assert.equal(0, #plan.digests)

      -- Elsewhere in the block than its text or signature: refused.
      local refused, err, client_error = json_body.scan(raw:gsub(
        '"signature":"s"', '"signature":"s","note":"see 493827165012"'), cat)
      assert.is_nil(refused)
      assert.is_true(client_error)
      assert.matches("thinking block", err)
    end)

  it("masks an original a key named elsewhere, and one found behind escapes", function()
    local raw = '{"messages":[{"role":"user","content":"key is wJalrXUtnFEMI\\/K7MDENG'
      .. '\\/bPxRfiCYEXAMPLEKEY\\n"}],'
      .. '"metadata":{"SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}'
    local doc = cjson.decode((mask(raw)))
    assert.equal("key is AWS_SECRET_KEY_000001\n", doc.messages[1].content)
    assert.equal("AWS_SECRET_KEY_000001", doc.metadata.SecretAccessKey)
  end)

  it("counts an occurrence only where no letter, digit, _ or .digit continues it", function()
    local doc = cjson.decode((mask(user("account 493827165012; 10.0.0.1 and i-0a1b2c3d; "
      .. "4938271650123 x493827165012 493827165012_a 10.0.0.12 10.0.0.1.5 5.10.0.0.1 "
      .. "i-0a1b2c3dx i-0a1b2c3d_1 (493827165012) \"10.0.0.1\", i-0a1b2c3d-old 493827165012."))))
    assert.equal("account AWS_ACCOUNT_000001; AWS_PRIVATE_IP_000001 and AWS_EC2_000001; "
      .. "4938271650123 x493827165012 493827165012_a AWS_PRIVATE_IP_000002 10.0.0.1.5 "
      .. "5.10.0.0.1 i-0a1b2c3dx i-0a1b2c3d_1 (AWS_ACCOUNT_000001) \"AWS_PRIVATE_IP_000001\", "
      .. "AWS_EC2_000001-old AWS_ACCOUNT_000001.", doc.messages[1].content)
  end)

  it("lets catalog matches win over repeated originals they overlap", function()
    -- The ARN holds the account: the ARN's token covers it there, the account's elsewhere.
    local out, plan = mask(user("account 123456789012 role arn:aws:iam::123456789012:role/Admin"
      .. " and 123456789012"))
    assert.equal(2, #plan.findings)
    assert.equal("account AWS_ACCOUNT_000001 role AWS_ARN_000001 and AWS_ACCOUNT_000001",
      cjson.decode(out).messages[1].content)
  end)

  it("leaves bodies without a finding and strings without an original as they are", function()
    local raw = '{"messages":[{"role":"user","content":"493827165012 alone"}],"x":"hi"}'
    local out, plan = mask(raw)
    assert.equal(raw, out)
    assert.equal(0, #plan.edits)
    raw = '{"a":"i-0a1b2c3d","b":"untouched \\u00e9"}'
    out = mask(raw)
    assert.equal('{"a":"AWS_EC2_000001","b":"untouched \\u00e9"}', out)
  end)
end)

describe("json_body request gaps", function()
  local cjson = require "cjson"
  local cat
  local function mask(raw) return mask_with(cat, raw) end
  local function refused(raw, why)
    local plan, err, client_error = json_body.scan(raw, cat)
    assert.is_nil(plan, raw)
    assert.is_true(client_error)
    assert.matches(why, err)
    assert.not_matches("AKIA", err)
  end
  local function assistant(blocks)
    return '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":['
      .. blocks .. ']}]}'
  end
  local function tool_input(input)
    return assistant('{"type":"tool_use","id":"t","name":"n","input":' .. input .. '}')
  end

  setup(function()
    cat = assert(catalog.load(AWS_MASKER_TEST_CATALOG))
  end)

  it("asks for the digest of an assistant thinking block whose text holds an identifier",
    function()
      for _, block in ipairs({
        { type = "thinking", thinking = "host i-0a1b2c3d", signature = "c2ln" },
        { type = "thinking", thinking = "x", signature = "arn:aws:iam::123456789012:role/A" },
        { type = "redacted_thinking", data = "EmwKAhg AKIAIOSFODNN7EXAMPLE" },
      }) do
        local raw = assistant(cjson.encode(block))
        local plan = assert(json_body.scan(raw, cat))
        assert.same({ thinking.block_digest(block) }, plan.digests)
        assert.equal(0, #plan.findings)
        assert.equal(raw, json_body.rewrite(plan, {}))
      end
      -- Twice the same block: one digest; two blocks: two.
      local one = '{"type":"thinking","thinking":"10.0.0.0/16","signature":"a"}'
      local two = '{"type":"thinking","thinking":"10.0.0.0/16","signature":"b"}'
      assert.equal(1, #assert(json_body.scan(assistant(one .. "," .. one), cat)).digests)
      assert.equal(2, #assert(json_body.scan(assistant(one .. "," .. two), cat)).digests)
      -- A block of tokens needs none.
      assert.same({}, assert(json_body.scan(assistant(
        '{"type":"thinking","thinking":"AWS_EC2_000001","signature":"s"}'), cat)).digests)
    end)

  it("refuses an assistant thinking block holding an identifier outside its text", function()
    for _, block in ipairs({
      '{"type":"thinking","thinking":"x","signature":"s","i-0a1b2c3d":1}',
      '{"type":"thinking","thinking":"x","signature":"s","note":["i-0a1b2c3d"]}',
      '{"type":"redacted_thinking","data":"x","thinking":"i-0a1b2c3d"}',
      -- Not the shape of a block the API delivers: no digest can vouch for it.
      '{"type":"thinking","thinking":"host i-0a1b2c3d"}',
      '{"type":"thinking","thinking":"host i-0a1b2c3d","signature":7}',
    }) do
      refused(assistant(block), "thinking block")
    end
    refused(assistant('{"type":"thinking","thinking":"x","signature":"s",'
      .. '"note":{"AccountId":123456789012}}'), "JSON number")
  end)

  it("passes a thinking block of tokens byte for byte, the rest of the body masked", function()
    local block = '{"type":"thinking","thinking":"AWS_EC2_000007 in\nAWS_VPC_000002",'
      .. '"signature":"EqQBCkYIARgCIkCmZ+/x=="}'
    local raw = '{"messages":[{"role":"user","content":"i-0a1b2c3d"},'
      .. '{"role":"assistant","content":[' .. block .. ']}]}'
    local out = mask(raw)
    assert.truthy(out:find(block, 1, true))
    assert.equal(1, select(2, out:gsub("AWS_EC2_000001", "")))
  end)

  it("checks the items of a list under a key as it checks the value of that key", function()
    local out = mask(tool_input('{"AccountIds":["123456789012",["210987654321"]],'
      .. '"n":["123456789012"]}'))
    local input = cjson.decode(out).messages[2].content[1].input
    assert.same({ "AWS_ACCOUNT_000001", { "AWS_ACCOUNT_000002" } }, input.AccountIds)
    assert.same({ "AWS_ACCOUNT_000001" }, input.n) -- the value found, repeated
    refused(tool_input('{"AccountIds": [123456789012, 210987654321]}'), "JSON number")
    refused(tool_input('{"AccountIds": [1, [ 123456789012 ]]}'), "JSON number")
    refused('{"metadata":{"owner_ids":[123456789012]}}', "JSON number")
    local raw = tool_input('{"count": [123456789012, 1.5e3], "n": [[123456789012]]}')
    assert.equal(raw, (mask(raw)))
  end)

  it("refuses an identifier written as plain text in base64 data", function()
    local function image(data)
      return '{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64",'
        .. '"media_type":"image/png","data":"' .. data .. '"}}]}]}'
    end
    refused(image("iVBORw0KGgo+AKIAIOSFODNN7EXAMPLE+AAAA"), "as plain text")
    refused(image("AROA1234567890EXAMPLE"), "as plain text")
    refused(image("iVBORw0KGgo i-0a1b2c3d"), "outside base64")
    local raw = image(ngx.encode_base64(("\0\255 AKIAIOSFODNN7EXAMPLE "):rep(40)))
    assert.equal(raw, (mask(raw)))
  end)

  it("masks a text/plain base64 document in its decoding and encodes it again", function()
    local function document(data, media)
      return '{"messages":[{"role":"user","content":[{"type":"document","source":{'
        .. '"type":"base64","media_type":"' .. media .. '","data":"' .. data .. '"}}]}]}'
    end
    local text = "log of i-0a1b2c3d\nkey AKIAIOSFODNN7EXAMPLE\n"
    local out = mask(document(ngx.encode_base64(text), "text/plain"))
    local data = cjson.decode(out).messages[1].content[1].source.data
    assert.equal("log of AWS_EC2_000001\nkey AWS_ACCESS_KEY_000001\n", ngx.decode_base64(data))
    refused(document("bm90 IGJh", "text/plain; charset=utf-8"), "not valid base64")
    local pdf = document(ngx.encode_base64("%PDF-1.7 i-0a1b2c3d"), "application/pdf")
    assert.equal(pdf, (mask(pdf)))
  end)

  it("masks texts outside the body with the body's findings and tokens", function()
    local raw = '{"messages":[{"role":"user","content":"account 493827165012 and i-0a1b2c3d"}]}'
    local texts = { { text = "trace 493827165012", key = "x-trace" },
      { text = "nothing" }, { text = "vpc-a01106c2 i-0a1b2c3d", key = "x-debug" } }
    local plan = assert(json_body.scan(raw, cat, texts))
    local tokens = fake_tokens(plan)
    assert.equal(3, #plan.findings)
    assert.equal("trace AWS_ACCOUNT_000001", json_body.rewrite_text(plan, 1, texts[1].text,
      tokens))
    assert.equal("nothing", json_body.rewrite_text(plan, 2, texts[2].text, tokens))
    assert.equal("AWS_VPC_000001 AWS_EC2_000001", json_body.rewrite_text(plan, 3,
      texts[3].text, tokens))
    plan = assert(json_body.scan(nil, cat, { { text = "x", key = "x-aws-account-id" },
      { text = "123456789012", key = "x-aws-account-id" } }))
    assert.equal(1, #plan.findings)
  end)
end)

describe("json_string", function()
  it("round-trips escapes, controls and unicode", function()
    local s = 'a"b\\c/\b\f\n\r\t\1\31é😀'
    local enc = json_string.encode(s)
    assert.equal('a\\"b\\\\c/\\b\\f\\n\\r\\t\\u0001\\u001fé😀', enc)
    assert.equal(s, json_string.decode(enc))
  end)

  it("encodes every byte as cjson does, NUL and DEL included", function()
    local cjson = require "cjson"
    local bytes = {}
    for b = 0, 127 do
      bytes[#bytes + 1] = string.char(b)
    end
    local s = table.concat(bytes) .. "é\0x"
    assert.equal(s, cjson.decode('"' .. json_string.encode(s) .. '"'))
    for _, b in ipairs(bytes) do
      local enc = json_string.encode(b)
      assert.equal(b, json_string.decode(enc))
      assert.equal(b:byte() < 32 or b == '"' or b == "\\", enc ~= b)
    end
  end)

  it("decodes surrogate pairs to 4-byte UTF-8", function()
    assert.equal("😀", json_string.decode("\\ud83d\\ude00"))
    assert.equal("\\ud83d", json_string.encode(json_string.decode("\\ud83d")))
  end)
end)
