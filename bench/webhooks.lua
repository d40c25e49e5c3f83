-- Signed webhook events from a file ("signature<TAB>payload" per line), each thread its own share.
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  events = {}
  for line in io.lines("bench/.webhook-events.txt") do
    local tab = line:find("\t", 1, true)
    events[#events + 1] = { line:sub(1, tab - 1), line:sub(tab + 1) }
  end
  step = tonumber(args[1]) or 1
  index = id + 1
end

function request()
  local event = events[index]
  index = index + step
  if index > #events then index = id + 1 end
  return wrk.format("POST", "/webhooks/stripe", { ["Stripe-Signature"] = event[1], ["Content-Type"] = "application/json" }, event[2])
end
