// Words for the player: why an action was refused, why the session ended.

import { ErrorCode, RejectCode } from './vocabulary.js';

const ACTION_NAMES = { move: 'Move', chat: 'Message', strike: 'Strike', heal: 'Heal', pickup: 'Pick up', use_item: 'Potion' };

const REJECTS = {
  [RejectCode.BLOCKED]: 'something is in the way',
  [RejectCode.OUT_OF_BOUNDS]: 'that is the edge of the world',
  [RejectCode.OCCUPIED]: 'someone is standing there',
  [RejectCode.TOO_FAST]: 'slow down a little',
  [RejectCode.COOLDOWN]: 'still cooling down',
  [RejectCode.NO_TARGET]: 'nobody there to target',
  [RejectCode.OUT_OF_RANGE]: 'too far away; step next to them first',
  [RejectCode.NO_ITEM]: 'there is no such item here',
  [RejectCode.INVENTORY_FULL]: 'your inventory is full',
  [RejectCode.DEFEATED]: 'you are defeated; wait to get back on your feet',
  [RejectCode.UNAVAILABLE]: 'the server cannot save right now; try again in a moment',
  [RejectCode.BAD_PAYLOAD]: 'the server did not understand it',
  [ErrorCode.BAD_FRAME]: 'the server did not understand it',
  [RejectCode.UNKNOWN_ABILITY]: 'no such ability',
  [RejectCode.NOT_USABLE]: 'that item cannot be used',
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
    case 'kicked':
      return { title: 'Disconnected by an operator', body: message || 'An operator of this server ended your session.' };
    default:
      return { title: 'Signed out', body: message || '' };
  }
}
