// The sign-in screen: the identity provider's button (OIDC), a name (dev servers) or a pasted token.

const NAME_KEY = 'tilehall.lastName';

export class LoginScreen {
  constructor({ mode, version, onDevName, onToken }) {
    this.screen = document.getElementById('login-screen');
    this.error = document.getElementById('login-error');
    document.getElementById('client-version').textContent = version;
    const devForm = document.getElementById('dev-login-form');
    const nameInput = document.getElementById('dev-name');
    const tokenForm = document.getElementById('token-login-form');
    const tokenInput = document.getElementById('token-input');
    const details = document.getElementById('token-login');

    if (mode === 'dev') {
      devForm.hidden = false;
      nameInput.value = localStorage.getItem(NAME_KEY) || '';
    } else {
      details.open = true; // the only way in
      details.querySelector('summary').textContent = 'Sign in';
    }

    devForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      const name = nameInput.value.trim();
      if (!name) return;
      localStorage.setItem(NAME_KEY, name);
      await this._busy(devForm, () => onDevName(name));
    });
    tokenForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      const token = tokenInput.value.trim();
      if (!token) return;
      await this._busy(tokenForm, () => onToken(token));
      tokenInput.value = '';
    });
    this.firstField = mode === 'dev' ? nameInput : tokenInput;
  }

  /** Offer "Sign in" at the IdP (`issuer` shown as its host); the pasted token stays, folded. */
  enableOidc(issuer, onStart) {
    const box = document.getElementById('oidc-login');
    const button = document.getElementById('oidc-sign-in');
    let host = issuer;
    try {
      host = new URL(issuer).host;
    } catch {
      /* show it as given */
    }
    document.getElementById('oidc-issuer').textContent = host;
    box.hidden = false;
    const details = document.getElementById('token-login');
    details.open = false;
    details.querySelector('summary').textContent = 'Sign in with a token';
    button.addEventListener('click', () => this._busy(box, onStart));
    this.firstField = button;
  }

  async _busy(form, fn) {
    const button = form.querySelector('button');
    button.disabled = true;
    this.error.textContent = '';
    try {
      await fn();
    } catch (err) {
      this.showError(err.message);
    } finally {
      button.disabled = false;
    }
  }

  show(message = '') {
    document.body.dataset.screen = 'login';
    document.getElementById('game-screen').hidden = true;
    this.screen.hidden = false;
    this.error.textContent = message;
    this.firstField.focus();
  }

  hide() {
    this.screen.hidden = true;
    this.error.textContent = '';
  }

  showError(message) {
    this.error.textContent = message;
  }
}
