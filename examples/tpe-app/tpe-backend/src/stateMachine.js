'use strict';

// A small AI-concierge session state machine, served for the runbook's
// /api/state-machine/* public endpoints.

const machine = {
  id: 'aiConcierge',
  version: 1,
  initial: 'idle',
  states: {
    idle: { on: { START: 'greeting' } },
    greeting: { on: { IDENTIFIED: 'matching', TIMEOUT: 'closed' } },
    matching: { on: { MATCHED: 'booking', NO_MATCH: 'escalated' } },
    booking: { on: { BOOKED: 'closed', CANCEL: 'closed' } },
    escalated: { on: { RESOLVED: 'closed' } },
    closed: { type: 'final' },
  },
};

function transitions() {
  const list = [];
  for (const [from, def] of Object.entries(machine.states)) {
    for (const [event, to] of Object.entries(def.on || {})) {
      list.push({ from, event, to });
    }
  }
  return list;
}

function diagram() {
  const lines = ['stateDiagram-v2', `  [*] --> ${machine.initial}`];
  for (const t of transitions()) lines.push(`  ${t.from} --> ${t.to}: ${t.event}`);
  for (const [name, def] of Object.entries(machine.states)) {
    if (def.type === 'final') lines.push(`  ${name} --> [*]`);
  }
  return { id: machine.id, format: 'mermaid', diagram: lines.join('\n') };
}

function metadata() {
  const states = Object.keys(machine.states);
  return {
    id: machine.id,
    version: machine.version,
    initial: machine.initial,
    states,
    finalStates: states.filter((s) => machine.states[s].type === 'final'),
    events: [...new Set(transitions().map((t) => t.event))],
    transitions: transitions(),
  };
}

module.exports = { diagram, metadata };
