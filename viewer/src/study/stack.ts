// The stack viewport of the active series: progressive loading, tools, overlay, cine and the
// state attributes that the contract names.

import { Enums as CoreEnums, type RenderingEngine, type Types, imageLoader } from '@cornerstonejs/core';
import { utilities as toolUtilities } from '@cornerstonejs/tools';
import { type DicomwebClient, SessionExpiredError } from '../contract';
import { cineFrameRate } from './cine';
import { element, formatNumber } from './dom';
import { addImage, imageIdOf, isAbortError } from './loader';
import { PrefetchQueue } from './prefetch';
import { type LoadProgress, allSettled, describeFailures, describeProgress } from './progress';
import { rangeToWindow, windowToRange } from './presets';
import { clampedZoom } from './zoom';
import type { SeriesImages } from './series';

// Background loads in flight at a time, besides those of the viewport itself. Six is the
// connection limit per host of HTTP/1.1 browsers, so more would only queue in the browser.
const MAX_PREFETCH_IN_FLIGHT = 6;

export interface StackEvents {
  // The first image of the first series shown is on screen.
  onFirstImage(): void;
  // Every image of the active series is loaded.
  onAllLoaded(): void;
  // A load failed because the session expired; the shell shows its sign-in state.
  onSessionExpired(error: SessionExpiredError): void;
  // The image on screen changed; measurements follow it.
  onImageChange(imageId: string): void;
}

/** Load progress of one series, kept while the study view is mounted. */
interface SeriesState {
  series: SeriesImages;
  imageIds: string[];
  loaded: Set<string>;
  failed: Map<string, string>;
}

type StackState = 'loading' | 'first-image' | 'loaded' | 'error';

export class StackView {
  readonly root: HTMLDivElement;
  readonly element: HTMLDivElement;
  private readonly overlaySeries = element('div', { class: 'overlay-line' });
  private readonly overlaySlice = element('div', { class: 'overlay-line', 'data-testid': 'overlay-slice' });
  private readonly overlayWindow = element('div', { class: 'overlay-line', 'data-testid': 'overlay-window' });
  private readonly overlayStatus = element('div', { class: 'overlay-line' });
  private readonly errorBox = element('div', { class: 'viewport-error', 'data-testid': 'viewport-error', hidden: true });
  private readonly states = new Map<string, SeriesState>();
  private active?: SeriesState;
  private queue?: PrefetchQueue;
  private shownFirstImage = false;
  // Whether an image of the active series has been rendered since show().
  private displayed = false;
  private cinePlaying = false;
  private disposed = false;
  // Aborts the requests of every image when the view is disposed.
  private readonly requests = new AbortController();

  constructor(
    private readonly renderingEngine: RenderingEngine,
    private readonly viewportId: string,
    private readonly client: DicomwebClient,
    private readonly events: StackEvents,
  ) {
    this.element = element('div', {
      class: 'viewport-canvas',
      'data-testid': 'viewport',
      'data-state': 'loading',
      'data-slice-index': 0,
      'data-slice-count': 0,
      'data-loaded-count': 0,
      'data-failed-count': 0,
      'data-inverted': 'false',
      'data-cine': 'stopped',
      tabindex: 0,
      'aria-label': 'Image viewport',
    });
    const overlay = element('div', { class: 'viewport-overlay', 'aria-live': 'polite' }, [
      element('div', { class: 'overlay-top' }, [this.overlaySeries, this.overlaySlice]),
      element('div', { class: 'overlay-bottom' }, [this.overlayWindow, this.overlayStatus]),
    ]);
    this.root = element('div', { class: 'viewport-pane' }, [this.element, overlay, this.errorBox]);
    this.element.addEventListener(CoreEnums.Events.STACK_NEW_IMAGE, () => this.onNewImage());
    this.element.addEventListener(CoreEnums.Events.VOI_MODIFIED, () => this.updateWindowAttributes());
    this.element.addEventListener(CoreEnums.Events.CAMERA_MODIFIED, () => this.updateZoomAttribute());
    this.element.addEventListener(CoreEnums.Events.IMAGE_RENDERED, () => this.onRendered());
    // The wheel scrolls here rather than with StackScrollTool, so that it also reaches images
    // that failed to load and shows why.
    // The listener is on the pane, so that the wheel also works over the error message.
    this.root.addEventListener('wheel', (event) => this.onWheel(event), { passive: false });
  }

  /** Enables the viewport element; call once the root is in the document, so it has a size. */
  enable(): void {
    this.renderingEngine.enableElement({
      viewportId: this.viewportId,
      type: CoreEnums.ViewportType.STACK,
      element: this.element,
      defaultOptions: { background: [0, 0, 0] },
    });
  }

  get viewport(): Types.IStackViewport {
    return this.renderingEngine.getViewport(this.viewportId) as Types.IStackViewport;
  }

  // Camera events arrive while the element is being enabled, before the viewport exists.
  private get ready(): boolean {
    return this.renderingEngine.getViewport(this.viewportId) !== undefined;
  }

  get series(): SeriesImages | undefined {
    return this.active?.series;
  }

  /** The number of images of the active series that failed to load. */
  get failedCount(): number {
    return this.active?.failed.size ?? 0;
  }

  get imageIds(): readonly string[] {
    return this.active?.imageIds ?? [];
  }

  /**
   * Shows a series: its first image (the middle slice of a stack of slices) first, then loads
   * the rest around the slice on screen.
   */
  async show(series: SeriesImages): Promise<void> {
    this.stopCine();
    this.queue?.stop();
    const state = this.stateOf(series);
    this.active = state;
    this.displayed = false;
    const count = state.imageIds.length;
    const start = series.multiframe || count < 3 ? 0 : Math.floor(count / 2);
    this.overlaySeries.textContent = series.images[0] ? describeSeries(series) : '';
    this.setAttribute('data-slice-count', count);
    this.setAttribute('data-slice-index', start);
    this.updateLoadedCount();
    this.setState('loading');
    this.hideError();
    if (count === 0) {
      this.setState('error');
      this.showError('This series has no images to display.');
      return;
    }

    this.updateOverlay(start);
    let firstImageShown = true;
    try {
      await this.viewport.setStack(state.imageIds, start);
    } catch (error) {
      if (this.active === state) {
        this.reportFailure(state.imageIds[start], error);
      }
      firstImageShown = false;
      if (error instanceof SessionExpiredError) {
        return;
      }
    }
    if (this.active !== state || this.disposed) {
      return;
    }

    // The other images load even when the first failed, so the user can scroll to them.
    if (firstImageShown) {
      this.viewport.render();
    }
    const queue = new PrefetchQueue(count, (index) => this.prefetch(state, index), MAX_PREFETCH_IN_FLIGHT);
    for (const imageId of state.loaded) {
      queue.skip(state.imageIds.indexOf(imageId));
    }
    this.queue = queue;
    queue.start(start);
  }

  private stateOf(series: SeriesImages): SeriesState {
    let state = this.states.get(series.seriesUid);
    if (state) {
      return state;
    }
    const imageIds = series.images.map((image) => imageIdOf(image.path));
    state = { series, imageIds, loaded: new Set(), failed: new Map() };
    const owner = state;
    series.images.forEach((image, index) => {
      addImage(imageIds[index], image.instance, image.frame, {
        client: this.client,
        path: image.path,
        signal: this.requests.signal,
        onLoaded: (imageId) => this.onImageLoaded(owner, imageId),
        onFailed: (imageId, error) => this.onImageFailed(owner, imageId, error),
      });
    });
    this.states.set(series.seriesUid, state);
    return state;
  }

  private async prefetch(state: SeriesState, index: number): Promise<void> {
    const imageId = state.imageIds[index];
    if (state.loaded.has(imageId)) {
      return;
    }
    await imageLoader.loadAndCacheImage(imageId, { priority: 5, requestType: CoreEnums.RequestType.Prefetch });
  }

  private onImageLoaded(state: SeriesState, imageId: string): void {
    state.loaded.add(imageId);
    state.failed.delete(imageId);
    if (state !== this.active) {
      return;
    }
    this.updateLoadedCount();
    this.checkSettled(state);
  }

  /**
   * Moves to `loaded` once every image settled (loaded or failed), unless the image on screen
   * failed, and shows how many failed with the first reason.
   */
  private checkSettled(state: SeriesState): void {
    const progress = progressOf(state);
    if (!this.displayed || !allSettled(progress)) {
      return;
    }
    if (this.currentState() !== 'error') {
      this.setState('loaded');
      const summary = describeFailures(progress, state.failed.values().next().value);
      if (summary) {
        this.showError(summary);
      }
    }
    this.events.onAllLoaded();
  }

  private onImageFailed(state: SeriesState, imageId: string, error: unknown): void {
    if (isAbortError(error) || this.disposed) {
      return;
    }
    if (error instanceof SessionExpiredError) {
      this.queue?.stop();
      this.events.onSessionExpired(error);
      return;
    }
    state.failed.set(imageId, error instanceof Error ? error.message : String(error));
    if (state === this.active) {
      this.updateLoadedCount();
      if (this.currentImageId() === imageId) {
        this.reportFailure(imageId, error);
      }
      this.checkSettled(state);
    }
  }

  private reportFailure(imageId: string, error: unknown): void {
    if (this.disposed || isAbortError(error)) {
      return;
    }
    if (error instanceof SessionExpiredError) {
      this.events.onSessionExpired(error);
      return;
    }
    const reason = this.active?.failed.get(imageId) ?? (error instanceof Error ? error.message : String(error));
    this.setState('error');
    this.showError(`Image ${this.imageIds.indexOf(imageId) + 1} could not be loaded: ${reason}`);
  }

  private currentImageId(): string | undefined {
    const index = Number(this.element.dataset.sliceIndex ?? 0);
    return this.imageIds[index];
  }

  private onNewImage(): void {
    const index = this.viewport.getCurrentImageIdIndex();
    this.setAttribute('data-slice-index', index);
    this.updateOverlay(index);
    this.queue?.setFocus(index);
    const imageId = this.imageIds[index];
    const failure = this.active?.failed.get(imageId);
    if (failure !== undefined) {
      this.reportFailure(imageId, new Error(failure));
    } else if (this.currentState() === 'error') {
      this.hideError();
      this.setState(this.active && allSettled(progressOf(this.active)) ? 'loaded' : 'first-image');
    }
    this.events.onImageChange(imageId);
  }

  private onRendered(): void {
    if (!this.active || this.displayed || !this.viewport.getImageData()) {
      return;
    }
    this.displayed = true;
    const complete = allSettled(progressOf(this.active));
    this.setState(complete ? 'loaded' : 'first-image');
    this.setAttribute('data-inverted', String(Boolean(this.viewport.getProperties().invert)));
    this.updateWindowAttributes();
    this.updateZoomAttribute();
    if (!this.shownFirstImage) {
      this.shownFirstImage = true;
      this.events.onFirstImage();
    }
    if (complete) {
      this.checkSettled(this.active);
    }
  }

  private onWheel(event: WheelEvent): void {
    if (!this.active || event.deltaY === 0) {
      return;
    }
    event.preventDefault();
    this.scrollBy(Math.sign(event.deltaY));
  }

  /** Scrolls one slice on Up, Down, PageUp and PageDown, and ignores other keys. */
  handleKey(event: KeyboardEvent): void {
    const deltas: Record<string, number> = { ArrowDown: 1, ArrowUp: -1, PageDown: 1, PageUp: -1 };
    const delta = deltas[event.key];
    if (delta === undefined || !this.active) {
      return;
    }
    event.preventDefault();
    this.scrollBy(delta);
  }

  /** Moves `delta` slices, stopping at the first and last. */
  scrollBy(delta: number): void {
    const count = this.imageIds.length;
    // The slice index attribute, not the viewport's, because the viewport keeps its index
    // when the image at the new one fails to load.
    const current = Number(this.element.dataset.sliceIndex ?? 0);
    const target = Math.min(count - 1, Math.max(0, current + delta));
    if (target === current) {
      return;
    }
    this.setAttribute('data-slice-index', target);
    this.updateOverlay(target);
    const imageId = this.imageIds[target];
    const failure = this.active?.failed.get(imageId);
    if (failure !== undefined) {
      this.reportFailure(imageId, new Error(failure));
      return;
    }
    void this.viewport.setImageIdIndex(target).catch((error: unknown) => {
      if (this.currentImageId() === imageId) {
        this.reportFailure(imageId, error);
      }
    });
  }

  /** Sets a window in modality units, such as a preset. */
  setWindow(width: number, center: number): void {
    this.viewport.setProperties({ voiRange: windowToRange(width, center) });
    this.viewport.render();
    this.updateWindowAttributes();
  }

  toggleInvert(): void {
    const { invert } = this.viewport.getProperties();
    this.viewport.setProperties({ invert: !invert });
    this.viewport.render();
    this.setAttribute('data-inverted', String(!invert));
  }

  /** Restores the image's own window, the inversion, zoom, pan and rotation. */
  reset(): void {
    this.stopCine();
    this.viewport.resetProperties();
    this.viewport.resetCamera();
    this.viewport.render();
    this.setAttribute('data-inverted', String(Boolean(this.viewport.getProperties().invert)));
    this.updateWindowAttributes();
    this.updateZoomAttribute();
  }

  get cineAvailable(): boolean {
    return this.imageIds.length > 1;
  }

  toggleCine(): boolean {
    if (this.cinePlaying) {
      this.stopCine();
    } else if (this.cineAvailable && this.active) {
      const framesPerSecond = cineFrameRate(this.active.series.images[0]?.instance);
      toolUtilities.cine.playClip(this.element, { framesPerSecond, loop: true });
      this.cinePlaying = true;
      this.setAttribute('data-cine', 'playing');
    }
    return this.cinePlaying;
  }

  stopCine(): void {
    if (!this.cinePlaying) {
      return;
    }
    toolUtilities.cine.stopClip(this.element);
    this.cinePlaying = false;
    this.setAttribute('data-cine', 'stopped');
  }

  /** Loads the image on screen again after a failure. */
  retry(): void {
    const imageId = this.currentImageId();
    if (!imageId || !this.active) {
      return;
    }
    if (!this.active.failed.has(imageId)) {
      // The summary of failed images: load every one of them again.
      this.active.failed.clear();
      this.updateLoadedCount();
      void this.show(this.active.series);
      return;
    }
    this.active.failed.delete(imageId);
    this.hideError();
    this.displayed = false;
    this.setState('loading');
    const index = this.imageIds.indexOf(imageId);
    void this.viewport
      .setStack(this.active.imageIds as string[], index)
      .then(() => this.viewport.render())
      .catch((error: unknown) => this.reportFailure(imageId, error));
  }

  dispose(): void {
    this.disposed = true;
    this.stopCine();
    this.queue?.stop();
    this.requests.abort();
  }

  /** Image ids of every series shown, for the caller to release. */
  allImageIds(): string[] {
    return [...this.states.values()].flatMap((state) => state.imageIds);
  }

  private updateLoadedCount(): void {
    const progress = this.active ? progressOf(this.active) : { count: 0, loaded: 0, failed: 0 };
    this.setAttribute('data-loaded-count', progress.loaded);
    this.setAttribute('data-failed-count', progress.failed);
    this.overlayStatus.textContent = describeProgress(progress);
  }

  private updateOverlay(index: number): void {
    this.overlaySlice.textContent = `Image ${index + 1} / ${this.imageIds.length}`;
  }

  private updateWindowAttributes(): void {
    if (!this.ready) {
      return;
    }
    const range = this.viewport.getProperties().voiRange;
    if (!range) {
      return;
    }
    const { width, center } = rangeToWindow(range.lower, range.upper);
    this.setAttribute('data-window-width', formatNumber(width));
    this.setAttribute('data-window-center', formatNumber(center));
    this.overlayWindow.textContent = `W ${formatNumber(width, 0)} L ${formatNumber(center, 0)}`;
  }

  private updateZoomAttribute(): void {
    if (!this.ready) {
      return;
    }
    let zoom = this.viewport.getZoom?.();
    const limited = zoom === undefined ? undefined : clampedZoom(zoom);
    if (limited !== undefined) {
      // The zoom tool has no limit of its own. setZoom modifies the camera again, within range.
      this.viewport.setZoom(limited);
      this.viewport.render();
      zoom = limited;
    }
    if (zoom !== undefined && Number.isFinite(zoom)) {
      this.setAttribute('data-zoom', formatNumber(zoom, 3));
    }
  }

  private showError(message: string): void {
    this.errorBox.replaceChildren(
      element('p', {}, [message]),
      element('button', { type: 'button', 'data-testid': 'viewport-retry' }, ['Retry']),
    );
    this.errorBox.querySelector('button')?.addEventListener('click', () => this.retry());
    this.errorBox.hidden = false;
  }

  private hideError(): void {
    this.errorBox.hidden = true;
    this.errorBox.replaceChildren();
  }

  private currentState(): StackState {
    return this.element.dataset.state as StackState;
  }

  private setState(state: StackState): void {
    this.setAttribute('data-state', state);
  }

  private setAttribute(name: string, value: string | number): void {
    this.element.setAttribute(name, String(value));
  }
}

function progressOf(state: SeriesState): LoadProgress {
  return { count: state.imageIds.length, loaded: state.loaded.size, failed: state.failed.size };
}

function describeSeries(series: SeriesImages): string {
  const instance = series.images[0].instance;
  const description = instance['0008103E']?.Value?.[0];
  const number = instance['00200011']?.Value?.[0];
  return [series.modality, number !== undefined ? `#${number}` : '', description ?? ''].filter(Boolean).join(' ');
}
