-- 001_init: core tables of the AI concierge, and a few seed contractors.

CREATE TABLE contractors (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    email       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ai_concierge_sessions (
    id             serial PRIMARY KEY,
    contractor_id  int REFERENCES contractors (id),
    state          text NOT NULL DEFAULT 'idle',
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ai_concierge_sessions_contractor_id_idx
    ON ai_concierge_sessions (contractor_id);

INSERT INTO contractors (name, email) VALUES
    ('Acme Roofing',          'office@acme-roofing.example'),
    ('Bright Solar Partners', 'hello@brightsolar.example'),
    ('Cedar Home Builders',   'team@cedarhomes.example'),
    ('Delta Plumbing Co.',    'service@deltaplumbing.example'),
    ('Evergreen Landscaping', 'info@evergreen.example');

INSERT INTO ai_concierge_sessions (contractor_id, state) VALUES
    (1, 'closed'),
    (1, 'matching'),
    (2, 'greeting'),
    (3, 'closed');
