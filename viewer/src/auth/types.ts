// The session interface that the rest of the viewer uses, the same for every auth mode.

/** Adds the credentials of the session to a request, or leaves it as it is. */
export interface RequestSigner {
  /** Returns the RequestInit to send to `url`. Raises SessionExpiredError when the session's
   * credentials are gone and cannot be renewed. */
  sign(url: string, init: RequestInit): Promise<RequestInit>;
}

export interface Session {
  /** The name to show for the signed-in user, or null when requests are not signed. */
  readonly user: string | null;
  readonly signer: RequestSigner;
  /** Whether a sign-out control makes sense (false in the unsigned mode). */
  readonly canSignOut: boolean;
  /** Forgets the credentials and leaves the viewer or shows the sign-in screen. */
  signOut(): void;
  /** Forgets the rejected credentials and starts a new sign-in. */
  signInAgain(): void;
}

/** The signer of the unsigned mode. */
export const unsignedSigner: RequestSigner = {
  sign: async (_url, init) => init,
};

/** Removes everything the viewer keeps in `storage` (keys starting with "cirrus."): the
 * credentials or tokens, and the worklist's filters, which may name a patient. */
export function forgetSession(storage: Storage): void {
  const keys = Array.from({ length: storage.length }, (_, index) => storage.key(index));
  for (const key of keys) {
    if (key?.startsWith('cirrus.')) storage.removeItem(key);
  }
}
