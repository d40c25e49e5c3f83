-- Each wrk thread walks its own share of a file of paths, so no path is requested twice.
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  paths = {}
  for line in io.lines("bench/.first-view-paths.txt") do paths[#paths + 1] = line end
  step = tonumber(args[1]) or 1
  index = id + 1
end

function request()
  local path = paths[index]
  index = index + step
  if index > #paths then index = id + 1 end
  return wrk.format("GET", path)
end
