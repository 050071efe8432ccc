-- Argo CD health of a ModelDeployment, from the status the mlrollout operator writes. In order:
--   1. no status or phase yet, or status.observedGeneration below metadata.generation: Progressing (the
--      operator has not acted on the latest spec, so nothing it reports is about that spec yet);
--   2. the Degraded condition is True, or phase Degraded: Degraded (a rollback: the new model stays in the
--      spec until it changes, or a human retries or undoes);
--   3. phase Paused: Suspended (spec.paused, `pause`, or a hold for a human), and a rollout waiting for an
--      approval hook (the Progressing condition's reason WaitingForApproval): Suspended, as Argo Rollouts
--      shows a rollout that waits at a pause step for someone else to let it go on;
--   4. phase Healthy with the Available condition not False: Healthy;
--   5. anything else (Pending, Progressing, a phase this script does not know): Progressing.
-- A status of the wrong shape gives Unknown with a message naming the field.

-- Where the rollout is: versions, split and step.
local function summary(status)
  local parts = {}
  local stable = text(get(status, "stableVersion"))
  local candidate = text(get(status, "candidateVersion"))
  local split = text(get(status, "trafficSplit"))
  local step = get(status, "currentStep")
  local index, kind = whole(get(step, "index")), text(get(step, "kind"))
  if stable ~= nil then
    table.insert(parts, "stable " .. stable)
  end
  if candidate ~= nil then
    table.insert(parts, "candidate " .. candidate)
  end
  if split ~= nil then
    table.insert(parts, "split " .. split)
  end
  if index ~= nil and kind ~= nil then
    table.insert(parts, "step " .. tostring(index + 1) .. " (" .. kind .. ")")
  end
  return table.concat(parts, ", ")
end

-- The operator's message (or `fallback`) followed by where the rollout is.
local function explain(status, fallback)
  local message = text(get(status, "message")) or fallback
  local where = summary(status)
  if where ~= "" then
    return message .. " [" .. where .. "]"
  end
  return message
end

local function health(obj)
  local status = get(obj, "status")
  local waiting = "Waiting for the mlrollout operator to report status"
  if status == nil then
    return "Progressing", waiting
  end
  if type(status) ~= "table" then
    return "Unknown", "status is not an object"
  end
  local phase = get(status, "phase")
  if phase == nil then
    return "Progressing", waiting
  end
  if type(phase) ~= "string" then
    return "Unknown", "status.phase is not a string"
  end

  local generation = whole(get(get(obj, "metadata"), "generation"))
  local observed = whole(get(status, "observedGeneration"))
  if observed == nil or (generation ~= nil and observed < generation) then
    if generation ~= nil then
      return "Progressing", "Waiting for the mlrollout operator to observe generation " .. tostring(generation)
    end
    return "Progressing", "Waiting for the mlrollout operator to observe the latest spec"
  end

  local degraded = condition(status, "Degraded")
  if phase == "Degraded" or get(degraded, "status") == "True" then
    return "Degraded", explain(status, text(get(degraded, "message")) or "Rolled back")
  end
  if phase == "Paused" then
    return "Suspended", explain(status, "Rollout paused")
  end
  local progressing = condition(status, "Progressing")
  if get(progressing, "status") == "True" and get(progressing, "reason") == "WaitingForApproval" then
    return "Suspended", explain(status, "Waiting for an approval hook")
  end
  local available = condition(status, "Available")
  if phase == "Healthy" then
    if get(available, "status") ~= "False" then
      return "Healthy", explain(status, "Serving")
    end
    return "Progressing", explain(status, "Not available: " .. (text(get(available, "message")) or "no reason given"))
  end
  return "Progressing", explain(status, text(phase) or "Progressing")
end

-- The checks above never raise; pcall keeps even an unforeseen error a status instead of an Argo CD error.
local ok, status, message = pcall(health, obj)
if not ok then
  return { status = "Unknown", message = "mlrollout health check failed: " .. tostring(status) }
end
return { status = status, message = message }
