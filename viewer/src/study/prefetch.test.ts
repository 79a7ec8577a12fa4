import { describe, expect, it } from 'vitest';
import { PrefetchQueue } from './prefetch';

/** A load function whose loads the test settles by hand. */
function manualLoads() {
  const started: number[] = [];
  const settle = new Map<number, (ok: boolean) => void>();
  const load = (index: number) =>
    new Promise<void>((resolve, reject) => {
      started.push(index);
      settle.set(index, (ok) => (ok ? resolve() : reject(new Error(`load ${index} failed`))));
    });
  return { started, settle, load };
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('PrefetchQueue', () => {
  it('starts the slices nearest the focus first, up to the limit', () => {
    const loads = manualLoads();
    const queue = new PrefetchQueue(10, loads.load, 3);
    queue.start(5);
    expect(loads.started).toEqual([5, 4, 6]);
  });

  it('starts the next load when one settles', async () => {
    const loads = manualLoads();
    const queue = new PrefetchQueue(10, loads.load, 2);
    queue.start(0);
    expect(loads.started).toEqual([0, 1]);
    loads.settle.get(0)!(true);
    await flush();
    expect(loads.started).toEqual([0, 1, 2]);
  });

  it('moves on after a failed load', async () => {
    const loads = manualLoads();
    const queue = new PrefetchQueue(3, loads.load, 1);
    queue.start(0);
    loads.settle.get(0)!(false);
    await flush();
    expect(loads.started).toEqual([0, 1]);
  });

  it('follows a new focus', async () => {
    const loads = manualLoads();
    const queue = new PrefetchQueue(20, loads.load, 1);
    queue.start(0);
    queue.setFocus(15);
    loads.settle.get(0)!(true);
    await flush();
    expect(loads.started).toEqual([0, 15]);
  });

  it('skips slices loaded elsewhere', () => {
    const loads = manualLoads();
    const queue = new PrefetchQueue(5, loads.load, 5);
    queue.skip(2);
    queue.start(2);
    expect(loads.started.sort()).toEqual([0, 1, 3, 4]);
  });

  it('starts nothing after stop', async () => {
    const loads = manualLoads();
    const queue = new PrefetchQueue(5, loads.load, 1);
    queue.start(0);
    queue.stop();
    loads.settle.get(0)!(true);
    await flush();
    expect(loads.started).toEqual([0]);
    expect(queue.remaining).toBe(0);
  });
});
