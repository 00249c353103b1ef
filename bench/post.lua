-- wrk script: POST /items with a new item name on every request, from a new
-- client address each time (X-Forwarded-For, believed from the local proxy), so
-- each write is counted against a rate-limit budget of its own and never refused.
-- Usage: wrk -s post.lua URL/items -- NAME_PREFIX [METHOD]

local prefix = "bench"
local method = "POST"
local counter = 0

function init(args)
  if args[1] then
    prefix = args[1]
  end
  if args[2] then
    method = args[2]
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  counter = counter + 1
  local body = string.format('{"name":"%s-%d","description":"written by the benchmark"}', prefix, counter)
  local headers = {}
  -- Headers given with -H (a signed-in user's Authorization), which wrk.format drops
  -- when a request brings headers of its own.
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["Content-Type"] = "application/json"
  headers["X-Forwarded-For"] = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  return wrk.format(method, nil, headers, body)
end
