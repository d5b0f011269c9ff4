-- Fragment: defines expiry(exp, now), the shared expiry time of a task's
-- progress keys (the task hash's field exp, Unix ms) after a write: exp
-- as it is while it leaves at least the retention, otherwise nine eighths
-- of the retention from the server's clock. It returns the time and
-- whether it moved, when the caller sets it on the task hash and each
-- key. The script defines retention (ms) first.
--
-- now, when given, is the writer's clock (Unix ms), which the script has
-- in its ARGV: whether exp leaves enough is then decided on it, and the
-- server's clock is read (TIME) only when exp moves, which a short task
-- never does. A writer's clock may be behind the server's, so on it exp
-- must leave a sixteenth of the retention more: a clock behind by less
-- than that still keeps the keys the retention after the write (a clock
-- ahead only moves exp sooner). Without now, the server's clock decides.
--@include lib/readclock.lua
local function expiry(exp, now)
  exp = tonumber(exp)
  if exp then
    if now then
      if exp - now >= retention + math.floor(retention / 16) then
        return exp, false
      end
    elseif exp - readClock() >= retention then
      return exp, false
    end
  end
  return readClock() + retention + math.floor(retention / 8), true
end
