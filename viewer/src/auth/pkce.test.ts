/// <reference types="node" />
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { base64UrlEncode, codeChallenge, createCodeVerifier, decodeJwtClaims } from './pkce';

describe('codeChallenge', () => {
  it('matches the example of RFC 7636 appendix B', async () => {
    expect(await codeChallenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk')).toBe('E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM');
  });
  it('matches node:crypto for a new verifier', async () => {
    const verifier = createCodeVerifier();
    expect(await codeChallenge(verifier)).toBe(createHash('sha256').update(verifier).digest('base64url'));
  });
});

describe('createCodeVerifier', () => {
  it('uses 43 unreserved characters', () => {
    expect(createCodeVerifier()).toMatch(/^[A-Za-z0-9\-_]{43}$/);
  });
  it('differs on each call', () => {
    expect(createCodeVerifier()).not.toBe(createCodeVerifier());
  });
});

describe('base64UrlEncode', () => {
  it('uses the URL alphabet without padding', () => {
    expect(base64UrlEncode(new Uint8Array([0xfb, 0xff, 0xfe]))).toBe('-__-');
    expect(base64UrlEncode(new Uint8Array([1]))).toBe('AQ');
  });
});

describe('decodeJwtClaims', () => {
  it('reads a UTF-8 payload', () => {
    const payload = Buffer.from(JSON.stringify({ email: 'rené@example.org', exp: 1700000000 })).toString('base64url');
    expect(decodeJwtClaims(`e30.${payload}.sig`)).toEqual({ email: 'rené@example.org', exp: 1700000000 });
  });
  it('rejects a token without a payload', () => {
    expect(() => decodeJwtClaims('opaque')).toThrow(/not a JWT/);
  });
});
