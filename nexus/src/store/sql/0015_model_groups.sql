-- Model groups: a client-facing name served by an ordered list of other models, tried in turn
-- when one fails or is rate limited. `members` is a JSON array of model names.
CREATE TABLE model_groups (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    members     TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);

CREATE TRIGGER groups_gen_ins AFTER INSERT ON model_groups
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER groups_gen_upd AFTER UPDATE ON model_groups
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER groups_gen_del AFTER DELETE ON model_groups
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
