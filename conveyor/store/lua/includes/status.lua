-- google.rpc.Status, encoded here for errors a script decides itself.

local function varint(n)
  local out = {}
  repeat
    local b = n % 128
    n = math.floor(n / 128)
    if n > 0 then b = b + 128 end
    out[#out + 1] = string.char(b)
  until n == 0
  return table.concat(out)
end

local function pb_bytes(field, value)
  return string.char(field * 8 + 2) .. varint(#value) .. value
end

-- Status{code, message, details: [Any(ErrorInfo{reason, domain, metadata})]}
local function status_bytes(code, reason, message, metadata)
  local info = pb_bytes(1, reason) .. pb_bytes(2, 'conveyor.dev')
  for k, v in pairs(metadata or {}) do
    info = info .. pb_bytes(3, pb_bytes(1, k) .. pb_bytes(2, v))
  end
  local any = pb_bytes(1, 'type.googleapis.com/google.rpc.ErrorInfo') .. pb_bytes(2, info)
  return string.char(8) .. varint(code) .. pb_bytes(2, message) .. pb_bytes(3, any)
end
