-- Task records for lists, shortened inside Redis: a page never moves whole
-- multi-megabyte texts and outputs over the wire just to show their first bytes.
-- KEYS: task hashes
-- ARGV: text max bytes, output / stderr max bytes (their last bytes are kept)
-- Returns one flat field list per task ({} if it is gone). A shortened text gets a
-- ``text_bytes`` field; a shortened result its ``output_bytes`` / ``stderr_bytes``
-- (and ``feedback_clipped``), so the caller marks the reply as clipped.
local text_max, out_max = tonumber(ARGV[1]), tonumber(ARGV[2])

-- Cut points moved to UTF-8 character starts (continuation bytes are 0x80..0xBF).
local function head(s, n)
  if #s <= n then return s end
  local cut = n + 1
  while cut > 1 do
    local b = string.byte(s, cut)
    if b < 0x80 or b >= 0xC0 then break end
    cut = cut - 1
  end
  return string.sub(s, 1, cut - 1)
end
local function tail(s, n)
  if #s <= n then return s end
  local cut = #s - n + 1
  while cut <= #s do
    local b = string.byte(s, cut)
    if b < 0x80 or b >= 0xC0 then break end
    cut = cut + 1
  end
  return string.sub(s, cut)
end

local out = {}
for i = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[i])
  for j = 1, #flat, 2 do
    local name, value = flat[j], flat[j + 1]
    if name == 'text' and #value > text_max then
      flat[j + 1] = head(value, text_max)
      flat[#flat + 1] = 'text_bytes'; flat[#flat + 1] = tostring(#value)
    elseif name == 'result' and #value > 2 * out_max + 4096 then
      local ok, res = pcall(cjson.decode, value)
      if ok and type(res) == 'table' then
        for _, f in ipairs({'output', 'stderr'}) do
          local v = res[f]
          if type(v) == 'string' and #v > out_max then
            res[f] = tail(v, out_max)
            res[f .. '_bytes'] = #v
          end
        end
        if res.feedback ~= nil and #cjson.encode(res.feedback) > 4096 then
          res.feedback = nil
          res.feedback_clipped = true
        end
        flat[j + 1] = cjson.encode(res)
      end
    end
  end
  out[i] = flat
end
return out
