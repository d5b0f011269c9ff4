-- Fragment: defines expiry(exp), the shared expiry time of a task's
-- progress keys (the task hash's field exp, Unix ms) after a write at
-- clock: exp as it is while it leaves at least the retention, otherwise
-- nine eighths of the retention from now. It returns the time and whether
-- it moved, when the caller sets it on the task hash and each key. The
-- script defines clock (lib/clock.lua) and retention (ms) first.
local function expiry(exp)
  exp = tonumber(exp)
  if not exp or exp - clock < retention then
    return clock + retention + math.floor(retention / 8), true
  end
  return exp, false
end
