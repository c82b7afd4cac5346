// Words for the player: why an action was refused, why the session ended.

const ACTION_NAMES = { move: 'Move', chat: 'Message', strike: 'Strike', heal: 'Heal', pickup: 'Pick up', use_item: 'Potion' };

const REJECTS = {
  blocked: 'something is in the way',
  out_of_bounds: 'that is the edge of the world',
  occupied: 'someone is standing there',
  too_fast: 'slow down a little',
  cooldown: 'still cooling down',
  no_target: 'nobody there to target',
  out_of_range: 'too far away; step next to them first',
  no_item: 'there is no such item here',
  inventory_full: 'your inventory is full',
  defeated: 'you are defeated; wait to get back on your feet',
  unavailable: 'the server cannot save right now; try again in a moment',
  bad_payload: 'the server did not understand it',
  bad_frame: 'the server did not understand it',
  unknown_ability: 'no such ability',
  not_usable: 'that item cannot be used',
  no_answer: 'no answer from the server; it may not have happened',
};

export function rejectText({ actionType, payload, code, message }) {
  const what = ACTION_NAMES[actionType === 'ability' ? payload?.name : actionType] || 'Action';
  const why = REJECTS[code] || message || code;
  return `${what} refused: ${why}.`;
}

export function fatalText(kind, { message, serverVersion, clientVersion }) {
  switch (kind) {
    case 'version':
      return {
        title: 'tilehall has been updated',
        body: `This page is version ${clientVersion}${serverVersion ? ` but the server runs ${serverVersion}` : ', which the server no longer accepts'}. Please reload the page to play.`,
      };
    case 'replaced':
      return { title: 'Signed in elsewhere', body: message || 'You signed in from another tab or device, so this one was disconnected.' };
    case 'auth':
      return { title: 'Please sign in again', body: message || 'The server did not accept your sign-in.' };
    default:
      return { title: 'Signed out', body: message || '' };
  }
}
