-- Resource actions for a ModelDeployment: the commands of `kubectl mlrollout`, sent the same way. An action
-- sets only the annotation mlrollout.io/command to JSON {"id","verb"[,"toRevision"]}
-- (operator/mlrollout/api/commands.py), never the spec or the status, so Argo CD sees no drift; the
-- operator acts once per id and answers in status.lastCommand.
--
-- The id is "argocd-<verb>-<metadata.resourceVersion>". Argo CD's API server reads the live object just
-- before it runs an action, and writing the annotation changes the resourceVersion, so every action that
-- changes anything gets a new id. Two runs of the same action on the same version of the object write the
-- same annotation: the operator acts once, as for a double click. Without a resourceVersion (not a live
-- object) the id falls back to the clock: "argocd-<verb>-t<unix seconds>".

local ANNOTATION = "mlrollout.io/command"
local VERBS = {
  ["promote"] = "promote",
  ["promote-full"] = "promoteFull",
  ["pause"] = "pause",
  ["resume"] = "resume",
  ["abort"] = "abort",
  ["retry"] = "retry",
  ["undo"] = "undo",
}
local ORDER = { "promote", "promote-full", "pause", "resume", "abort", "retry", "undo" }
local ICONS = {
  ["promote"] = "fa fa-fw fa-forward",
  ["promote-full"] = "fa fa-fw fa-fast-forward",
  ["pause"] = "fa fa-fw fa-pause-circle",
  ["resume"] = "fa fa-fw fa-play-circle",
  ["abort"] = "fa fa-fw fa-times-circle",
  ["retry"] = "fa fa-fw fa-redo",
  ["undo"] = "fa fa-fw fa-undo",
}

-- Revision numbers `undo` can redeploy, ascending: status.revisions that keep their pod template.
local function known_revisions(status)
  local numbers = {}
  local list = object(get(status, "revisions"))
  if list == nil then
    return numbers
  end
  for _, r in ipairs(list) do
    local number = whole(get(r, "number"))
    if number ~= nil and number >= 1 and text(get(r, "template")) ~= nil then
      table.insert(numbers, number)
    end
  end
  table.sort(numbers)
  return numbers
end

local function listed(numbers)
  local words = {}
  for _, n in ipairs(numbers) do
    table.insert(words, tostring(n))
  end
  if #words == 0 then
    return "none"
  end
  return table.concat(words, ", ")
end

local function contains(numbers, wanted)
  for _, n in ipairs(numbers) do
    if n == wanted then
      return true
    end
  end
  return false
end

-- The revision `undo` goes back to without toRevision, as the operator picks it: the newest promoted
-- revision in status.history other than the stable one that is still known.
local function undo_target(status, known)
  local stable = get(get(status, "stable"), "revision")
  local history = object(get(status, "history"))
  local target = nil
  if history == nil then
    return nil
  end
  for _, entry in ipairs(history) do
    local number = whole(get(entry, "number"))
    if get(entry, "outcome") == "promoted" and get(entry, "revision") ~= stable and contains(known, number) then
      target = number
    end
  end
  return target
end

-- Why `action` does not apply to the object now, or nil when it does. The same rules as the operator's
-- (operator/mlrollout/rollout/commands.py), read from the status it writes.
local function refusal(obj, action)
  local status = object(get(obj, "status"))
  if status == nil then
    return "the mlrollout operator has not reported a status yet"
  end
  local phase = text(get(status, "phase")) or "unknown"
  local candidate = object(get(status, "candidate"))
  local step = object(get(status, "currentStep"))
  local paused_by_command = get(status, "pausedByCommand") == true
  local hold = text(get(status, "hold"))
  if action == "promote" or action == "promote-full" or action == "pause" or action == "abort" then
    if candidate == nil then
      return "no rollout in progress (phase " .. phase .. ")"
    end
    if (action == "promote" or action == "promote-full") and step == nil then
      return "the candidate is not ready yet"
    end
    if action == "pause" and (paused_by_command or phase == "Paused") then
      return "the rollout is already paused"
    end
    return nil
  end
  if action == "resume" then
    if paused_by_command or hold ~= nil or (candidate ~= nil and get(step, "kind") == "pause") then
      return nil
    end
    if get(get(obj, "spec"), "paused") == true then
      return "paused by spec.paused: set it to false in the spec"
    end
    return "nothing is paused"
  end
  if action == "retry" then
    if object(get(status, "heldBack")) == nil then
      return "no revision is held back"
    end
    if candidate ~= nil then
      return "a rollout is in progress"
    end
    return nil
  end
  if action == "undo" then
    local stable = object(get(status, "stable"))
    if stable == nil then
      return "no stable revision"
    end
    -- Offered when there is a revision to go back to: neither the stable one nor the candidate (to stop a
    -- rollout, abort). The action itself takes any known revision, as the operator does.
    local stable_number, candidate_number = whole(get(stable, "number")), whole(get(candidate, "number"))
    for _, n in ipairs(known_revisions(status)) do
      if n ~= stable_number and n ~= candidate_number then
        return nil
      end
    end
    return "no earlier revision to go back to"
  end
  return "unknown action"
end

-- Argo CD's action list: every action, enabled only where the operator would carry it out.
local function discovery(obj)
  local actions = {}
  for _, name in ipairs(ORDER) do
    actions[name] = { ["disabled"] = refusal(obj, name) ~= nil, ["iconClass"] = ICONS[name] }
  end
  actions["undo"]["params"] = { { ["name"] = "toRevision" } }
  return actions
end

local function command_id(obj, verb)
  local version = whole(get(get(obj, "metadata"), "resourceVersion"))
  if version ~= nil and version >= 0 then
    return "argocd-" .. verb .. "-" .. tostring(version)
  end
  local os = require("os")
  return "argocd-" .. verb .. "-t" .. tostring(os.time())
end

-- Runs `action`: the object with the command annotation set, or an error that names why not (Argo CD
-- then changes nothing and shows the message).
local function act(obj, action, params)
  local function refuse(why)
    error(action .. ": " .. why .. "; nothing was changed", 0)
  end
  local verb = VERBS[action]
  if verb == nil then
    refuse("unknown action")
  end
  local why = refusal(obj, action)
  if why ~= nil then
    refuse(why)
  end
  local tail = ""
  if action == "undo" then
    local status = get(obj, "status")
    local known = known_revisions(status)
    local raw = get(params, "toRevision")
    local to_revision = nil
    if raw ~= nil and raw ~= "" then
      to_revision = whole(raw)
      if to_revision == nil or to_revision < 1 or to_revision > 2147483647 then
        refuse("toRevision must be a revision number (1 or more), got " .. (text(raw) or "a " .. type(raw)))
      end
      if not contains(known, to_revision) then
        refuse("revision " .. tostring(to_revision) .. " is not known (known: " .. listed(known) .. ")")
      end
      tail = ',"toRevision":' .. tostring(to_revision)
    elseif undo_target(status, known) == nil then
      refuse("no earlier promoted revision to go back to; give toRevision (known: " .. listed(known) .. ")")
    end
  end
  local metadata = object(get(obj, "metadata"))
  if metadata == nil then
    refuse("the object has no metadata")
  end
  if object(metadata.annotations) == nil then
    metadata.annotations = {}
  end
  local id = command_id(obj, verb)
  metadata.annotations[ANNOTATION] = '{"id":"' .. id .. '","verb":"' .. verb .. '"' .. tail .. "}"
  return obj
end
