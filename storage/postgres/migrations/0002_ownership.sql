-- Issue 10: one writer per character (ownership epochs), one first character per user, and the
-- global uniqueness of (character, seq) that the partitioned action_event cannot give.

-- Taking ownership bumps owner_epoch (one UPDATE ... RETURNING); every write carries the epoch
-- it was built under, and the batch UPDATE refuses a write whose epoch is no longer the row's.
ALTER TABLE character_profile
    ADD COLUMN owner_epoch bigint NOT NULL DEFAULT 0 CHECK (owner_epoch >= 0);

-- The character made on a user's first login. The partial unique index lets two simultaneous
-- first logins race: both INSERT ... ON CONFLICT DO NOTHING, exactly one row is created.
ALTER TABLE character_profile
    ADD COLUMN is_first boolean NOT NULL DEFAULT false;
UPDATE character_profile AS c SET is_first = true
FROM (
    SELECT DISTINCT ON (user_id) character_id
    FROM character_profile
    ORDER BY user_id, created_at, character_id
) AS earliest
WHERE c.character_id = earliest.character_id;
CREATE UNIQUE INDEX character_profile_first_per_user ON character_profile (user_id) WHERE is_first;

-- One row per stored client action: a unique index on action_event would have to include
-- persisted_at (its partition key), so it could not refuse the same seq stored on two days.
-- Written in the same transaction as the events; pruned by retention with the partitions (the
-- row's monotonic last_action_seq keeps the pruned seqs from being accepted again).
CREATE TABLE action_seq (
    character_id    uuid        NOT NULL,
    sequence_number bigint      NOT NULL CHECK (sequence_number >= 1),
    action_id       uuid        NOT NULL,
    persisted_at    timestamptz NOT NULL,
    PRIMARY KEY (character_id, sequence_number)
);
CREATE INDEX action_seq_persisted_at_idx ON action_seq (persisted_at);

-- Backfill from the log. Before this migration nothing stopped a (character, seq) from being
-- stored twice; where two rows share one, the earliest (persisted_at, then action_id) is kept:
-- it is the one whose ack the client saw first, the later one was a duplicate.
INSERT INTO action_seq (character_id, sequence_number, action_id, persisted_at)
SELECT DISTINCT ON (character_id, sequence_number)
       character_id, sequence_number, action_id, persisted_at
FROM action_event
WHERE sequence_number IS NOT NULL
ORDER BY character_id, sequence_number, persisted_at, action_id;
