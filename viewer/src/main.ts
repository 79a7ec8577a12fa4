// The app shell: loads the configuration, signs in, and routes between the worklist and the
// study view under a header with the signed-in user.

import './ui/styles.css';
import { ConfigError, loadConfig } from './config';
import { type DicomwebClient, type MountStudyView, SessionExpiredError } from './contract';
import { HttpDicomwebClient } from './dicomweb';
import { type Session, startSession } from './auth/index';
import { el, messagePanel, replaceChildren } from './ui/dom';
import { type Route, parseRoute } from './ui/router';
import { mountWorklist } from './worklist/view';

const PRODUCT_NAME = 'Cirrus PACS';

async function boot(root: HTMLElement): Promise<void> {
  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    showFatal(root, 'The viewer cannot start', messageOf(error, 'The configuration could not be loaded.'));
    return;
  }
  let session: Session;
  try {
    session = await startSession(config.auth, root, async (signer) => {
      await new HttpDicomwebClient(config.dicomweb, signer).json('/studies?limit=1');
    });
  } catch (error) {
    showFatal(root, 'Sign-in failed', messageOf(error, 'The sign-in did not complete.'), true);
    return;
  }
  const shell = new Shell(root, session);
  const client = new HttpDicomwebClient(config.dicomweb, session.signer, {
    onSessionExpired: (error) => shell.showSessionExpired(error),
  });
  shell.start(client);
}

/** The header, the routed view below it and the session-expired screen over both. */
class Shell {
  private readonly view = el('div', { class: 'view', id: 'view' });
  private unmount: (() => void) | null = null;
  private client: DicomwebClient | null = null;
  private expired = false;

  constructor(
    private readonly root: HTMLElement,
    private readonly session: Session,
  ) {}

  start(client: DicomwebClient): void {
    this.client = client;
    replaceChildren(this.root, el('a', { class: 'skip-link', href: '#view' }, ['Skip to content']), this.header(), this.view);
    window.addEventListener('hashchange', () => void this.render());
    void this.render();
    // Loads the study view's module once the page is idle, so that opening a study does not
    // wait for the imaging libraries. A failure here is reported when a study opens.
    const prefetch = () => void loadStudyView().catch(() => undefined);
    if ('requestIdleCallback' in window) requestIdleCallback(prefetch, { timeout: 5000 });
    else setTimeout(prefetch, 1000);
  }

  showSessionExpired(error: SessionExpiredError): void {
    if (this.expired) return;
    this.expired = true;
    this.unmount?.();
    this.unmount = null;
    const button = el('button', { type: 'button', class: 'primary', 'data-testid': 'sign-in-again' }, ['Sign in again'], {
      click: () => this.session.signInAgain(),
    });
    replaceChildren(this.view, messagePanel('session-expired', 'Session expired', error.message, [button]));
    button.focus();
  }

  private header(): HTMLElement {
    const user = this.session.user
      ? el('span', { class: 'user', title: 'Signed in as' }, [this.session.user])
      : el('span', { class: 'user muted' }, ['Unsigned requests (open local stack)']);
    const signOut = this.session.canSignOut
      ? el('button', { type: 'button', 'data-testid': 'sign-out' }, ['Sign out'], { click: () => this.session.signOut() })
      : null;
    return el('header', { class: 'app-header' }, [
      el('a', { class: 'product', href: '#/' }, [PRODUCT_NAME]),
      el('nav', { 'aria-label': 'Main' }, [el('a', { href: '#/' }, ['Worklist'])]),
      el('div', { class: 'session' }, [user, signOut]),
    ]);
  }

  private async render(): Promise<void> {
    if (this.expired || !this.client) return;
    this.unmount?.();
    this.unmount = null;
    const route = parseRoute(location.hash);
    document.title = route.kind === 'study' ? `Study – ${PRODUCT_NAME}` : `Worklist – ${PRODUCT_NAME}`;
    if (route.kind === 'worklist') {
      this.unmount = mountWorklist(this.view, this.client);
    } else if (route.kind === 'study') {
      await this.mountStudy(route);
    } else {
      const back = el('a', { href: '#/', class: 'button' }, ['Back to the worklist']);
      replaceChildren(this.view, messagePanel('not-found', 'Page not found', 'This address names no page of the viewer.', [back]));
    }
  }

  private async mountStudy(route: Extract<Route, { kind: 'study' }>): Promise<void> {
    const hash = location.hash;
    let mountStudyView: MountStudyView;
    try {
      ({ mountStudyView } = await loadStudyView());
    } catch (error) {
      const retry = el('button', { type: 'button', 'data-testid': 'study-retry' }, ['Retry'], { click: () => location.reload() });
      replaceChildren(this.view, messagePanel('study-error', 'The study view could not be loaded', messageOf(error, ''), [retry]));
      return;
    }
    // The route changed while the module loaded.
    if (location.hash !== hash || this.expired || !this.client) return;
    const container = el('div', { class: 'study-container' });
    replaceChildren(this.view, container);
    this.unmount = mountStudyView(container, this.client, { site: route.site, studyUid: route.studyUid }, {
      mprSeriesUid: route.mprSeriesUid,
      onClose: () => location.assign('#/'),
    });
  }
}

let studyViewModule: Promise<typeof import('./study/index')> | null = null;

/** Imports the study view's module, which bundles the imaging libraries, at most once. A
 * failed import is tried again on the next call. */
function loadStudyView(): Promise<typeof import('./study/index')> {
  studyViewModule ??= import('./study/index').catch((error: unknown) => {
    studyViewModule = null;
    throw error;
  });
  return studyViewModule;
}

function showFatal(root: HTMLElement, title: string, message: string, signIn = false): void {
  const retry = el('button', { type: 'button', class: 'primary', 'data-testid': 'boot-retry' }, [signIn ? 'Start again' : 'Retry'], {
    // After a failed sign-in, drops its code and state from the address before starting again.
    click: () => (signIn ? location.assign(location.pathname) : location.reload()),
  });
  replaceChildren(root, messagePanel('boot-error', title, message, [retry]));
  retry.focus();
}

function messageOf(error: unknown, fallback: string): string {
  if (error instanceof ConfigError) return `The configuration of the viewer failed to load: ${error.message}.`;
  return error instanceof Error && error.message ? error.message : fallback;
}

const root = document.getElementById('app');
if (root) void boot(root);
