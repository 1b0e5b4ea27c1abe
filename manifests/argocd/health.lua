-- Argo CD health check for mltask.dev/v1alpha1 MLTask and Pipeline (argocd-cm keys
-- resource.customizations.health.mltask.dev_MLTask and ..._Pipeline carry this same script).
-- After editing, regenerate argocd-cm-patch.yaml: python manifests/argocd/gen_argocd_cm.py
-- Argo CD runs checks from argocd-cm without the string and math libraries, so this uses
-- base functions only (type, tonumber, tostring).
local hs = {}

-- A non-empty string, or nil: every field below may be absent or of an unexpected type.
local function text(v)
  if type(v) == "string" and v ~= "" then
    return v
  end
  return nil
end

local status = obj.status
if type(status) ~= "table" or text(status.status) == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local generation = nil
if type(obj.metadata) == "table" then
  generation = tonumber(obj.metadata.generation)
end
local observed = tonumber(status.observedGeneration)
if generation ~= nil and observed ~= nil and generation > observed then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local health = {
  completed = "Healthy",
  init = "Progressing",
  running = "Progressing",
  retry = "Progressing",
  stopping = "Progressing",
  failed = "Degraded",
  stopped = "Suspended",
}
local phase = text(status.status)
hs.status = health[phase] or "Unknown"

local message = text(status.message) or phase
-- where it is: an MLTask's step (run_task), a Pipeline's progress (2/3)
local where = text(status.executeStep)
if obj.kind == "Pipeline" then
  where = text(status.progress)
end
if where ~= nil then
  message = where .. ": " .. message
end
hs.message = message
return hs
