-- Why a schedule's last tick made no job (its template was refused at firing, or its owner
-- is gone), shown in GET /v1/schedules/{id}; cleared by the next tick that makes one.
ALTER TABLE schedules ADD COLUMN last_error TEXT;
ALTER TABLE schedules ADD COLUMN last_error_at INTEGER;
