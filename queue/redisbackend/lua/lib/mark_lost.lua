-- Fragment: defines lostMarks(leases, wake), what lib/reclaim.lua and
-- lib/stray.lua share to take entries back: it returns a table whose
-- mark(entry, holder) marks entry lost, marked counts the entries it
-- marked, and wake() ends the marking.
--
-- mark puts entry in the leases set (one ZADD) as the lease of a worker
-- found lost: the token (lib/token.lua) of entry and holder, a holder
-- marked lost (lostHolder, lib/lost.lua) whose number is that of the lost
-- lease; or, with holder nil, lostHolder of the clock: an entry delivered
-- with no lease (its fetch failed), whose lease taken over next is then
-- numbered above the clock, so above any lease the entry had before
-- (unless the server's clock went back since). The token is scored by the
-- clock, so that the next fetch takes it over ("worker lost", see
-- fetch.lua). No lease number equals a lost holder: every lease script
-- of the lost worker finds its lease no longer held. mark returns the
-- token. The caller removes the token it replaces, if any.
--
-- wake adds an entry to the wake stream (wakeFetchers, lib/wake.lua)
-- when mark marked any, so that the waiting fetchers look at once, and
-- returns marked.
--
-- It uses clock (lib/clock.lua).
--@include lib/lost.lua
--@include lib/token.lua
--@include lib/wake.lua
local function lostMarks(leases, wake)
  local marks = {marked = 0}
  function marks.mark(entry, holder)
    local lost = token(entry, holder or lostHolder(string.format('%d', clock)))
    redis.call('ZADD', leases, clock, lost)
    marks.marked = marks.marked + 1
    return lost
  end
  function marks.wake()
    if marks.marked > 0 then
      wakeFetchers(wake)
    end
    return marks.marked
  end
  return marks
end
