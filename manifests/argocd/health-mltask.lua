-- Argo CD health of an mltask.dev MLTask, from status.status (and executeStep, message).
local hs = {}
if obj.status == nil or obj.status.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end
local st = obj.status
if obj.metadata ~= nil and obj.metadata.generation ~= nil and st.observedGeneration ~= nil
    and obj.metadata.generation > st.observedGeneration then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local health = {
  completed = "Healthy",
  init = "Progressing", running = "Progressing", retry = "Progressing",
  stopping = "Progressing",
  failed = "Degraded",
  stopped = "Suspended",
}
hs.status = health[st.status] or "Unknown"
local message = st.message or st.status
if st.executeStep ~= nil then
  message = st.executeStep .. ": " .. message
end
hs.message = message
return hs
