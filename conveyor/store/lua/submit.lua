-- Create a job (see create_job in _lib.lua). ARGV: prefix, job json, spec.
-- Returns {id, state, position, existing (0|1)} or the error 'duplicate:<id>'.
return create_job(cjson.decode(ARGV[2]), ARGV[3], now_ms())
