-- Where to start looking for a string inside a text: a plain string.find stops at every
-- occurrence of the first byte of what it looks for, so looking for the part of a string that
-- starts at its rarest byte (then checking what comes before) costs a fraction of looking for
-- the whole string from its first byte when that one is common (a letter, a space).

local byte = string.byte

-- Bytes from most to least frequent in prose, code and JSON, roughly (lower case; upper-case
-- letters and everything not listed count as rare).
local COMMON = " etaoinsrhldcumfpgwybv,.k\n-\"':/0=12_()"
local FREQUENCY = {}
for k = 1, #COMMON do
  FREQUENCY[byte(COMMON, k)] = #COMMON - k + 1
end

local _M = {}

-- The position in s (1-based) of its rarest byte, the earliest of equally rare ones, among the
-- first #s - keep + 1 bytes (so that at least keep bytes follow from it; keep defaults to 1).
function _M.offset(s, keep)
  local last = #s - (keep or 1) + 1
  if last <= 1 then
    return 1
  end
  local best, best_freq = 1, nil
  for k = 1, last do
    local freq = FREQUENCY[byte(s, k)] or 0
    if not best_freq or freq < best_freq then
      best, best_freq = k, freq
    end
  end
  return best
end

return _M
