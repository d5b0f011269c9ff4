-- Fragment: defines lostHolder(holder), the holder in the token of a
-- lease (see lib/token.lua) whose worker was found dead (see
-- lib/reclaim.lua) until a fetch takes it over: "lost/" and the number of
-- the dead worker's lease (holder), so that the lease taken over next is
-- numbered above it (see fetch.lua). No lease number is ever equal to it,
-- so every lease script of the dead worker finds its lease no longer
-- held. isLost(holder) says whether a holder is one; "lost" alone is what
-- versions before 2026-12-05 recorded.
local function lostHolder(holder)
  return 'lost/' .. holder
end
local function isLost(holder)
  return holder == 'lost' or (holder ~= nil and string.sub(holder, 1, 5) == 'lost/')
end
