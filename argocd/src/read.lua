-- Reading a ModelDeployment safely. Argo CD hands the script whatever the API server holds, and runs user
-- overrides and every action in a sandbox with only the base, table, package and a safe os library: no
-- string or math library. So every read checks the type, and a value of the wrong type is treated as
-- absent: never a Lua error. Numbers are floats (gopher-lua, Lua 5.1); tostring writes whole ones as "3".

-- status.message and condition messages are at most 1024 characters (the CRD); longer text comes from
-- something else and is not shown (without string.sub it cannot be cut).
local MAX_TEXT = 1024
local MAX_WHOLE = 9007199254740992 -- 2^53: above it, floats skip whole numbers

-- t[key] when t is a table, else nil.
local function get(t, key)
  if type(t) == "table" then
    return t[key]
  end
  return nil
end

-- v when it is a table (a JSON object or list), else nil.
local function object(v)
  if type(v) == "table" then
    return v
  end
  return nil
end

-- A whole number, also when written as a string ("3"); nil for anything else (NaN, inf, 2.5, "x").
local function whole(v)
  if type(v) == "string" then
    v = tonumber(v)
  end
  if type(v) ~= "number" or v % 1 ~= 0 or v > MAX_WHOLE or v < -MAX_WHOLE then
    return nil
  end
  return v
end

-- Text to show: a non-empty string (or a number), nil otherwise; over-long text becomes a note.
local function text(v)
  if type(v) == "number" then
    return tostring(v)
  end
  if type(v) ~= "string" or v == "" then
    return nil
  end
  if #v > MAX_TEXT then
    return "(" .. tostring(#v) .. " characters, too long to show)"
  end
  return v
end

-- The condition of a type in status.conditions; entries that are not objects are skipped.
local function condition(status, ctype)
  local list = object(get(status, "conditions"))
  if list == nil then
    return nil
  end
  for _, c in ipairs(list) do
    if get(c, "type") == ctype then
      return c
    end
  end
  return nil
end
