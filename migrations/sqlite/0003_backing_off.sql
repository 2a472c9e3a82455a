-- A node backing off after a failed attempt has a status of its own, `backing_off`
-- (model::NodeStatus). Before, it was `waiting`, told apart by its wait_reason's text: the
-- engine's retries began with `retrying `, and scale_out's cleanup backed off with
-- `<class> failure <n>; retrying with the same spec` (re-entered as `backing off after
-- <class>`). Nodes of jobs in flight at the upgrade move to the new status here, so a watch's
-- nudge (which now wakes `waiting` nodes only) never cuts their backoff short. Their wake_at,
-- reason and history are unchanged.
UPDATE node_tasks SET status = 'backing_off'
 WHERE status = 'waiting'
   AND (substr(wait_reason, 1, 9) = 'retrying '
        OR wait_reason LIKE '% failure %; retrying with the same spec'
        OR wait_reason LIKE 'backing off after %');
