import { describe, expect, it, vi } from 'vitest';
import { ConfigError, loadConfig, parseConfig } from './config';

const COGNITO = {
  mode: 'cognito',
  region: 'eu-west-1',
  userPoolId: 'eu-west-1_AbC123',
  clientId: 'abc123def456',
  domain: 'https://cirrus.auth.eu-west-1.amazoncognito.com',
  identityPoolId: 'eu-west-1:0a1b2c3d-0000-1111-2222-333344445555',
};

describe('parseConfig', () => {
  it('accepts the open mode', () => {
    expect(parseConfig({ dicomweb: '/dicomweb/', auth: { mode: 'none' } })).toEqual({ dicomweb: '/dicomweb', auth: { mode: 'none' } });
  });
  it('accepts the keys mode', () => {
    expect(parseConfig({ dicomweb: '/dicomweb', auth: { mode: 'keys', region: 'us-east-1' } }).auth).toEqual({ mode: 'keys', region: 'us-east-1' });
  });
  it('accepts the cognito mode', () => {
    expect(parseConfig({ dicomweb: 'https://api.example/prod', auth: COGNITO }).auth).toEqual(COGNITO);
  });
  it.each([
    [null, /JSON object/],
    [{ auth: { mode: 'none' } }, /"dicomweb"/],
    [{ dicomweb: 'dicomweb', auth: { mode: 'none' } }, /"dicomweb" must be a path/],
    [{ dicomweb: '/dicomweb' }, /"auth"/],
    [{ dicomweb: '/dicomweb', auth: { mode: 'basic' } }, /"auth.mode"/],
    [{ dicomweb: '/dicomweb', auth: { mode: 'keys' } }, /"auth.region"/],
    [{ dicomweb: '/dicomweb', auth: { ...COGNITO, domain: 'http://insecure.example' } }, /"auth.domain"/],
    [{ dicomweb: '/dicomweb', auth: { ...COGNITO, identityPoolId: undefined } }, /"auth.identityPoolId"/],
  ])('rejects %j', (document, message) => {
    expect(() => parseConfig(document)).toThrow(message);
  });
});

describe('loadConfig', () => {
  it('reports an HTTP failure', async () => {
    const fetchImpl = vi.fn(async () => new Response('', { status: 404 }));
    await expect(loadConfig('/config.json', fetchImpl)).rejects.toThrow(/HTTP 404/);
  });
  it('reports invalid JSON', async () => {
    const fetchImpl = vi.fn(async () => new Response('<html>'));
    await expect(loadConfig('/config.json', fetchImpl)).rejects.toBeInstanceOf(ConfigError);
  });
  it('reports a network error', async () => {
    const fetchImpl = vi.fn(async () => {
      throw new TypeError('Failed to fetch');
    });
    await expect(loadConfig('/config.json', fetchImpl)).rejects.toThrow(/could not be fetched/);
  });
});
