-- Fragment: defines lostHolder, what the holders hash records for an
-- entry whose worker was found dead (see lib/reclaim.lua) until a fetch
-- takes it over: no lease token is ever equal to it, so every lease
-- script of the dead worker finds its lease no longer held.
local lostHolder = 'lost'
