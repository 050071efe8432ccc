-- Argo CD health check for mlrollout.io/ModelDeployment.
--
-- Install as argocd-cm `resource.customizations.health.mlrollout.io_ModelDeployment` (docs/argocd.md).
-- Argo CD runs it with gopher-lua (Lua 5.1) and the object in the global `obj`; it must return a table
-- with `status` (Healthy, Progressing, Degraded, Suspended) and `message`. Written for Lua 5.1 and 5.4.
--
-- Rules, in order:
--   1. no status yet, or status.observedGeneration < metadata.generation: Progressing (the operator has
--      not acted on the latest spec, so nothing it reports is about that spec yet);
--   2. the Degraded condition is True, or phase Degraded: Degraded (a rollback: the new model stays in the
--      spec until the user changes it, retries or undoes);
--   3. phase Paused: Suspended (spec.paused, a pause step, or a human `kubectl mlrollout pause`);
--   4. phase Healthy with Available not False: Healthy;
--   5. anything else (Pending, Progressing, unknown phases): Progressing.

local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function int(n)
  return string.format("%d", n)
end

-- A short description of where the rollout is: versions, split and step.
local function summary(status)
  local parts = {}
  if status.stableVersion ~= nil then
    table.insert(parts, "stable " .. status.stableVersion)
  end
  if status.candidateVersion ~= nil then
    table.insert(parts, "candidate " .. status.candidateVersion)
  end
  if status.trafficSplit ~= nil then
    table.insert(parts, "split " .. status.trafficSplit)
  end
  if status.currentStep ~= nil and status.currentStep.kind ~= nil and status.currentStep.index ~= nil then
    table.insert(parts, "step " .. int(status.currentStep.index + 1) .. " (" .. status.currentStep.kind .. ")")
  end
  return table.concat(parts, ", ")
end

local function explain(status, fallback)
  local text = status.message
  if text == nil or text == "" then
    text = fallback
  end
  local where = summary(status)
  if where ~= "" then
    return text .. " [" .. where .. "]"
  end
  return text
end

local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the mlrollout operator to report status"
  return hs
end

if status.observedGeneration == nil or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "Waiting for the mlrollout operator to observe generation " .. int(generation)
  else
    hs.message = "Waiting for the mlrollout operator to observe the latest spec"
  end
  return hs
end

local degraded = condition(status, "Degraded")
if status.phase == "Degraded" or (degraded ~= nil and degraded.status == "True") then
  hs.status = "Degraded"
  local fallback = "Rolled back"
  if degraded ~= nil and degraded.message ~= nil and degraded.message ~= "" then
    fallback = degraded.message
  end
  hs.message = explain(status, fallback)
  return hs
end

if status.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = explain(status, "Rollout paused")
  return hs
end

local available = condition(status, "Available")
if status.phase == "Healthy" and (available == nil or available.status ~= "False") then
  hs.status = "Healthy"
  hs.message = explain(status, "Serving")
  return hs
end

hs.status = "Progressing"
if status.phase == "Healthy" then
  hs.message = explain(status, "Not available: " .. (available.message or ""))
else
  hs.message = explain(status, status.phase)
end
return hs
