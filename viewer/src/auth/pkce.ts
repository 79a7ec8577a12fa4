// Helpers of the OAuth 2.0 authorization code flow with PKCE (RFC 7636) and of ID tokens.

/** Encodes bytes as base64url without padding (RFC 4648 section 5). */
export function base64UrlEncode(bytes: Uint8Array): string {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Returns a random base64url string of `byteCount` random bytes, for state and verifiers. */
export function randomToken(byteCount = 32): string {
  return base64UrlEncode(crypto.getRandomValues(new Uint8Array(byteCount)));
}

/** Returns a new code_verifier: 43 characters from 32 random bytes (RFC 7636 allows 43 to 128). */
export function createCodeVerifier(): string {
  return randomToken(32);
}

/** Returns the S256 code_challenge of a verifier: base64url(SHA-256(ASCII(verifier))). */
export async function codeChallenge(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return base64UrlEncode(new Uint8Array(digest));
}

/** Returns the claims of a JWT's payload, without verifying its signature: the viewer only
 * reads the user's name and the expiry, and AWS verifies the token when it is used. */
export function decodeJwtClaims(token: string): Record<string, unknown> {
  const payload = token.split('.')[1];
  if (!payload) throw new Error('the token is not a JWT: it has no payload part');
  const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), '='));
  const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
  const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
  if (typeof claims !== 'object' || claims === null) throw new Error('the JWT payload is not a JSON object');
  return claims as Record<string, unknown>;
}
