-- Thinking blocks the gateway delivered, so that a client may send them back unchanged.
--
-- The API checks an assistant turn's thinking and redacted_thinking blocks against their
-- signature, so the gateway forwards them byte for byte. One holding an identifier is trusted
-- only when the gateway delivered it to the same scope: every such block of a response gets a
-- digest binding its whole content, written to the mapping store under the request's scope;
-- a request's block holding an identifier passes only when its digest is known there.
--
--   thinking.response_start(st, content_type, content_encoding)  -- header filter
--   local digests = thinking.response_chunk(st, chunk, eof)   -- body filter, what is sent on
--   if digests then thinking.record_later(store, st.scope, digests, on_failure) end
--   local digest = thinking.block_digest(block)               -- a decoded block of a request
--
-- The digest is computed as the stream passes: SHA-1 chained over fixed 4 KiB pieces of the
-- text (ngx.sha1_bin is the one digest every nginx Lua module has, Kong's included), so an
-- open block holds at most one piece and its signature, never the stream.

local cjson = require "cjson.safe"
local sse = require "aws_masker.sse"

local sha1_bin = ngx.sha1_bin
local byte = string.byte
local find = string.find
local format = string.format
local lower = string.lower
local sub = string.sub
local concat = table.concat
local type = type

local _M = {}

-- Bytes of text hashed per link of the chain.
local PIECE = 4096

-- A JSON response larger than this is not searched for thinking blocks (its blocks stay
-- unknown, and are refused if sent back holding an identifier).
_M.MAX_JSON_BYTES = 8 * 1024 * 1024

local CHAIN_START = sha1_bin("aws_masker thinking text")

local HEX = ("%02x"):rep(20)

-- The refusal of a block holding an identifier whose digest the scope does not know.
_M.UNKNOWN = "an assistant thinking block holds an AWS identifier and is unknown to the "
  .. "gateway under this credential (it was not delivered through the gateway, it was "
  .. "changed, its record expired, or it could not be recorded); it cannot be masked without "
  .. "breaking its signature, so the request was not forwarded: leave that block out of the "
  .. "history, or start a new conversation, to go on"

-- An incremental digest of a text: full pieces are hashed as they fill, the rest is held.
local function new_text_digest()
  return { chain = CHAIN_START, held = "" }
end

local function add_text(d, text)
  if text == "" then
    return
  end
  local held = d.held .. text
  local chain, pos, len = d.chain, 1, #held
  while len - pos + 1 >= PIECE do
    chain = sha1_bin(chain .. sub(held, pos, pos + PIECE - 1))
    pos = pos + PIECE
  end
  d.chain = chain
  d.held = pos > 1 and sub(held, pos) or held
end

-- Every input but the last is 20 + PIECE bytes, the last 20 + fewer: no text is another's.
local function end_text(d)
  return sha1_bin(d.chain .. d.held)
end

-- The block digest, hex: its type, the digest of its text (thinking, or redacted data) and
-- its signature ("" for redacted_thinking).
local function finish(kind, text_digest, signature)
  return format(HEX, byte(sha1_bin(kind .. "\0" .. end_text(text_digest) .. signature), 1, 20))
end

local KIND_TEXT = { thinking = "thinking", redacted_thinking = "data" }

-- The digest of a decoded block {type =, thinking =, signature =} or {type =, data =}, or nil
-- when it has not the shape of a block the API delivers.
function _M.block_digest(block)
  local kind = block.type
  local field = KIND_TEXT[kind]
  local text = field and block[field]
  if type(text) ~= "string" then
    return nil
  end
  local signature = ""
  if kind == "thinking" then
    signature = block.signature
    if type(signature) ~= "string" then
      return nil
    end
  end
  local d = new_text_digest()
  add_text(d, text)
  return finish(kind, d, signature)
end

-- The fields of a block that its digest covers: strings there may hold what the model wrote.
function _M.covered(kind, key)
  if kind == "thinking" then
    return key == "thinking" or key == "signature"
  end
  return kind == "redacted_thinking" and key == "data"
end

-- The JSON body's blocks (message.content) as digests, appended to out.
local function json_blocks(body, out)
  if not find(body, "thinking", 1, true) then
    return
  end
  local doc = cjson.decode(body)
  local content = type(doc) == "table" and doc.content
  if type(content) ~= "table" then
    return
  end
  for i = 1, #content do
    local block = content[i]
    if type(block) == "table" and KIND_TEXT[block.type] then
      out[#out + 1] = _M.block_digest(block)
    end
  end
end

-- Stream events: a block opens at content_block_start, grows with thinking_delta and
-- signature_delta, and is digested at its content_block_stop.
local function stream_event(rec, ev)
  local open = rec.open
  if not find(ev, "thinking", 1, true) and not find(ev, "signature", 1, true)
      and not (rec.count > 0 and find(ev, "content_block_stop", 1, true)) then
    return true
  end
  local first, last = sse.data_value(ev)
  if not first or last < first then
    return true
  end
  local doc = cjson.decode(sub(ev, first, last))
  if type(doc) ~= "table" or type(doc.index) ~= "number" then
    return true
  end
  local t, index = doc.type, doc.index

  if t == "content_block_start" and type(doc.content_block) == "table" then
    local cb = doc.content_block
    local field = KIND_TEXT[cb.type]
    if field then
      local block = { kind = cb.type, text = new_text_digest(), signature = {} }
      add_text(block.text, type(cb[field]) == "string" and cb[field] or "")
      if type(cb.signature) == "string" then
        block.signature[1] = cb.signature
      end
      if not open[index] then
        rec.count = rec.count + 1
      end
      open[index] = block
    end

  elseif t == "content_block_delta" and type(doc.delta) == "table" then
    local block, delta = open[index], doc.delta
    if not block then
      return true
    end
    if delta.type == "thinking_delta" and type(delta.thinking) == "string" then
      add_text(block.text, delta.thinking)
    elseif delta.type == "signature_delta" and type(delta.signature) == "string" then
      block.signature[#block.signature + 1] = delta.signature
    end

  elseif t == "content_block_stop" then
    local block = open[index]
    if block then
      open[index] = nil
      rec.count = rec.count - 1
      local signature = block.kind == "thinking" and concat(block.signature) or ""
      local done = rec.done
      done[#done + 1] = finish(block.kind, block.text, signature)
    end
  end
  return true
end

-- Decides from the response headers whether its thinking blocks are looked for: JSON and
-- event streams the client can read, of a request whose scope is known.
function _M.response_start(st, content_type, content_encoding)
  st.thinking = nil
  if not st.scope or (content_encoding and lower(content_encoding) ~= "identity") then
    return
  end
  local ctype = lower(content_type or "application/json")
  if find(ctype, "text/event-stream", 1, true) then
    st.thinking = { stream = true, pending = "", search_from = 1, open = {}, count = 0,
      blocks = 0 }
  elseif find(ctype, "json", 1, true) then
    st.thinking = { chunks = {}, n = 0, bytes = 0, blocks = 0 }
  end
end

-- Takes the next chunk sent to the client (nil: none) and returns the digests of the blocks
-- it completed, or nil. A stream holds at most its last unfinished event.
function _M.response_chunk(st, chunk, eof)
  local rec = st.thinking
  if not rec then
    return nil
  end
  local out = {}

  if rec.stream then
    rec.done = out
    sse.cut(rec, chunk, stream_event, rec)
    if eof and rec.pending ~= "" then
      stream_event(rec, rec.pending)
      rec.pending = ""
    end
    if #rec.pending > sse.MAX_EVENT_BYTES then
      st.thinking = nil -- an event without end: its block cannot be followed
      return nil
    end

  else
    if chunk and chunk ~= "" then
      rec.bytes = rec.bytes + #chunk
      if rec.bytes > _M.MAX_JSON_BYTES then
        st.thinking = nil
        return nil
      end
      rec.n = rec.n + 1
      rec.chunks[rec.n] = chunk
    end
    if eof then
      json_blocks(concat(rec.chunks, "", 1, rec.n), out)
      rec.chunks, rec.n = {}, 0
    end
  end

  if out[1] then
    rec.blocks = rec.blocks + #out
    return out
  end
  return nil
end

-- Blocks seen in the response so far, for the log line.
function _M.blocks(st)
  local rec = st.thinking
  return rec and rec.blocks or 0
end

local function record(premature, store, scope, digests, on_failure)
  if premature then
    return
  end
  local ok, err = store:remember_thinking(scope, digests)
  if not ok and on_failure then
    on_failure(#digests, err)
  end
end

-- Writes digests to the store from a timer (response phases cannot open connections).
-- on_failure(count, err) is called when the write (or the timer) fails. Returns nothing.
function _M.record_later(store, scope, digests, on_failure)
  local ok, err = ngx.timer.at(0, record, store, scope, digests, on_failure)
  if not ok and on_failure then
    on_failure(#digests, "timer: " .. (err or "not created"))
  end
end

return _M
