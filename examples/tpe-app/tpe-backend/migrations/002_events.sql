-- 002_events: events, read by GET /api/events/:id/context.

CREATE TABLE events (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    starts_at   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO events (name, starts_at) VALUES
    ('Power100 Summit',        '2026-03-12 09:00:00+00'),
    ('Contractor Growth Day',  '2026-05-20 13:00:00+00');
