local unmask = require "aws_masker.unmask"
local errors = require "aws_masker.errors"
local cjson = require "cjson"

local ORIGINALS = {
  AWS_EC2_000001 = "i-0a1b2c3d",
  AWS_ARN_000001 = [[arn:aws:s3:::b\"q]],
}

describe("unmask", function()
  it("restores known tokens in text and counts unknown ones", function()
    local r = unmask.new(ORIGINALS)
    local out = r:text("AWS_EC2_000001, xAWS_EC2_000001 AWS_EC2_000009 AWS_EC2_0000011")
    assert.equal("i-0a1b2c3d, xi-0a1b2c3d AWS_EC2_000009 AWS_EC2_0000011", out)
    assert.equal(2, r.restored)
    assert.equal(1, r.unknown)
  end)

  it("JSON-escapes originals inside JSON", function()
    local r = unmask.new(ORIGINALS)
    local body = '{"content":[{"type":"text","text":"see AWS_ARN_000001"}],"n":1.0}'
    local out = r:json_body(body)
    assert.equal('{"content":[{"type":"text","text":"see arn:aws:s3:::b\\\\\\"q"}],"n":1.0}', out)
    assert.equal([[see arn:aws:s3:::b\"q]], cjson.decode(out).content[1].text)
  end)

  it("restores keys and tool input, leaves thinking blocks untouched", function()
    local r = unmask.new(ORIGINALS)
    local body = '{"content":[{"type":"thinking","thinking":"AWS_EC2_000001","signature":"s"},'
      .. '{"type":"tool_use","id":"t","input":{"AWS_EC2_000001":"AWS_EC2_000001"}}],'
      .. '"stop_sequence":"AWS_EC2_000001"}'
    local doc = cjson.decode(r:json_body(body))
    assert.equal("AWS_EC2_000001", doc.content[1].thinking)
    assert.equal("i-0a1b2c3d", doc.content[2].input["i-0a1b2c3d"])
    assert.equal("i-0a1b2c3d", doc.stop_sequence)
  end)

  it("falls back to a plain replace for a body that is not JSON", function()
    local r = unmask.new(ORIGINALS)
    assert.equal("error near i-0a1b2c3d", r:json_body("error near AWS_EC2_000001"))
  end)

  it("returns a body without tokens as it is", function()
    local body = '{"a": "b"}'
    assert.equal(body, unmask.new(ORIGINALS):json_body(body))
  end)
end)

describe("errors", function()
  it("builds Anthropic-shaped bodies per status", function()
    local doc = cjson.decode(errors.body(503, 'mapping store "unreachable"'))
    assert.same({ type = "error", error = { type = "api_error",
      message = 'mapping store "unreachable"' } }, doc)
    assert.equal("invalid_request_error", cjson.decode(errors.body(400, "x")).error.type)
    assert.equal("request_too_large", cjson.decode(errors.body(413, "x")).error.type)
    assert.equal("api_error", cjson.decode(errors.body(500, "x")).error.type)
  end)
end)

describe("scope", function()
  local scope = require "aws_masker.scope"

  it("is the first 20 hex characters of hmac_sha1(secret, credential)", function()
    -- RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?")
    assert.equal("effcdf6ae5eb2fa2d274",
      scope.from_value("Jefe", "what do ya want for nothing?"))
  end)

  it("takes x-api-key first, then Authorization", function()
    assert.equal("k", scope.credential("k", "Bearer b"))
    assert.equal("Bearer b", scope.credential(nil, "Bearer b"))
    assert.equal("Bearer b", scope.credential("", "Bearer b"))
    assert.equal("", scope.credential(nil, nil))
  end)
end)
