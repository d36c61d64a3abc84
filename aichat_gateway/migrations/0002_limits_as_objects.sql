-- Releases before this one stored listings.limits as a JSON *string* holding the object
-- ('"{\"rpm\": 60}"'): the value was encoded twice. Unwrap those into real objects.
UPDATE listings SET limits = (limits #>> '{}')::jsonb WHERE jsonb_typeof(limits) = 'string';
ALTER TABLE listings ADD CONSTRAINT listings_limits_is_object CHECK (jsonb_typeof(limits) = 'object');
