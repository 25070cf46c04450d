-- wrk script: every request is a POST of the same JSON body, read once from BODY_FILE.
local path = os.getenv("BODY_FILE") or "bench/order-1k.json"
local f = assert(io.open(path, "rb"), "cannot open " .. path)
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
