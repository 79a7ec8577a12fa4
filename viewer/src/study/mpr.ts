// The MPR layout: axial, sagittal and coronal volume viewports of one series, with crosshairs
// and one window shared by the three.

import {
  Enums as CoreEnums,
  type RenderingEngine,
  type Types,
  cache,
  eventTarget,
  setVolumesForViewports,
  volumeLoader,
} from '@cornerstonejs/core';
import {
  CrosshairsTool,
  Enums as ToolEnums,
  PanTool,
  StackScrollTool,
  type Synchronizer,
  SynchronizerManager,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  synchronizers,
} from '@cornerstonejs/tools';
import { SessionExpiredError } from '../contract';
import { element } from './dom';
import { mprRefusal } from './geometry';
import type { SeriesImages } from './series';

const ORIENTATIONS = [
  { name: 'axial', orientation: CoreEnums.OrientationAxis.AXIAL, label: 'Axial' },
  { name: 'sagittal', orientation: CoreEnums.OrientationAxis.SAGITTAL, label: 'Sagittal' },
  { name: 'coronal', orientation: CoreEnums.OrientationAxis.CORONAL, label: 'Coronal' },
] as const;

type MprState = 'loading' | 'loaded' | 'error';

export class MprView {
  readonly root: HTMLDivElement;
  private readonly errorBox = element('div', { class: 'mpr-error', 'data-testid': 'mpr-error', role: 'alert', hidden: true });
  private readonly elements: HTMLDivElement[];
  private readonly viewportIds: string[];
  private readonly toolGroupId: string;
  private readonly synchronizerId: string;
  private readonly crosshairsButton: HTMLButtonElement;
  private volumeId?: string;
  private enabled = false;
  private crosshairs = true;
  // Image ids of the volume on screen, to tell its failed loads from others.
  private volumeImageIds = new Set<string>();
  private readonly onImageLoadFailed = (event: Event) => {
    const detail = (event as CustomEvent<{ imageId?: string; error?: unknown }>).detail;
    if (!this.root.hidden && detail?.imageId && this.volumeImageIds.has(detail.imageId) && this.state() !== 'error') {
      const reason = detail.error instanceof Error ? detail.error.message : 'the image could not be loaded';
      this.fail(`The volume could not be built, because a slice failed to load: ${reason}`);
    }
  };
  private readonly onVolumeLoaded = (event: Event) => {
    const detail = (event as CustomEvent<{ volumeId?: string }>).detail;
    if (detail?.volumeId === this.volumeId && this.state() === 'loading') {
      this.setState('loaded');
    }
  };

  /** `id` makes the viewport, tool group and synchronizer ids unique to one mount. */
  constructor(
    private readonly renderingEngine: RenderingEngine,
    private readonly id: string,
    onClose: () => void,
    private readonly onSessionExpired: (error: SessionExpiredError) => void,
  ) {
    this.viewportIds = ORIENTATIONS.map((o) => `${id}-mpr-${o.name}`);
    this.toolGroupId = `${id}-mpr-tools`;
    this.synchronizerId = `${id}-mpr-voi`;
    this.elements = ORIENTATIONS.map((o) =>
      element('div', { class: 'viewport-canvas', 'data-testid': `viewport-${o.name}`, 'aria-label': `${o.label} view` }),
    );
    const close = element('button', { type: 'button', 'data-testid': 'mpr-close' }, ['Back to stack']);
    close.addEventListener('click', onClose);
    this.crosshairsButton = element('button', { type: 'button', 'data-testid': 'mpr-tool-crosshairs', 'aria-pressed': 'true' }, ['Crosshairs']);
    this.crosshairsButton.addEventListener('click', () => this.setCrosshairs(!this.crosshairs));
    const panes = ORIENTATIONS.map((o, i) =>
      element('div', { class: 'viewport-pane' }, [this.elements[i], element('div', { class: 'viewport-overlay' }, [element('div', { class: 'overlay-top' }, [o.label])])]),
    );
    this.root = element('div', { class: 'mpr', 'data-testid': 'mpr', 'data-state': 'loading', hidden: true }, [
      element('div', { class: 'mpr-toolbar' }, [close, this.crosshairsButton, element('span', { class: 'mpr-hint' }, ['Right drag zooms, middle drag pans, the wheel scrolls; with Crosshairs off, left drag sets the window.'])]),
      this.errorBox,
      element('div', { class: 'mpr-grid' }, panes),
    ]);
    eventTarget.addEventListener(CoreEnums.Events.IMAGE_VOLUME_LOADING_COMPLETED, this.onVolumeLoaded);
    eventTarget.addEventListener(CoreEnums.Events.IMAGE_LOAD_FAILED, this.onImageLoadFailed);
  }

  /**
   * Shows the MPR of a series, or the reason why it has none. `failedCount` is the number of
   * its images that failed to load in the stack: a volume with missing slices is refused.
   */
  async show(series: SeriesImages, imageIds: readonly string[], failedCount: number): Promise<void> {
    this.root.hidden = false;
    this.errorBox.hidden = true;
    this.setState('loading');
    const reason = mprRefusal(series, failedCount);
    if (reason) {
      this.fail(reason);
      return;
    }
    try {
      this.enableViewports();
      const volumeId = `cornerstoneStreamingImageVolume:${this.id}-${series.seriesUid}`;
      this.volumeId = volumeId;
      this.volumeImageIds = new Set(imageIds);
      const volume = cache.getVolume(volumeId) ?? (await volumeLoader.createAndCacheVolume(volumeId, { imageIds: [...imageIds] }));
      await setVolumesForViewports(this.renderingEngine, [{ volumeId }], this.viewportIds);
      this.renderingEngine.renderViewports(this.viewportIds);
      const streaming = volume as unknown as { load?: (callback: () => void) => void; loadStatus?: { loaded?: boolean } };
      if (streaming.loadStatus?.loaded) {
        if (this.state() === 'loading') {
          this.setState('loaded');
        }
      } else {
        streaming.load?.(() => undefined);
      }
    } catch (error) {
      if (error instanceof SessionExpiredError) {
        this.onSessionExpired(error);
      }
      this.fail(`The volume could not be built: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  hide(): void {
    this.root.hidden = true;
  }

  private enableViewports(): void {
    if (this.enabled) {
      return;
    }
    ORIENTATIONS.forEach((o, i) => {
      this.renderingEngine.enableElement({
        viewportId: this.viewportIds[i],
        type: CoreEnums.ViewportType.ORTHOGRAPHIC,
        element: this.elements[i],
        defaultOptions: { orientation: o.orientation, background: [0, 0, 0] as Types.Point3 },
      });
    });

    const group = ToolGroupManager.createToolGroup(this.toolGroupId);
    if (!group) {
      throw new Error(`tool group ${this.toolGroupId} exists already`);
    }
    for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, CrosshairsTool]) {
      group.addTool(tool.toolName);
    }
    for (const viewportId of this.viewportIds) {
      group.addViewport(viewportId, this.renderingEngine.id);
    }
    group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Auxiliary }] });
    group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Secondary }] });
    group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Wheel }] });
    group.setToolActive(CrosshairsTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Primary }] });

    const synchronizer: Synchronizer = synchronizers.createVOISynchronizer(this.synchronizerId, {
      syncInvertState: true,
      syncColormap: false,
    });
    for (const viewportId of this.viewportIds) {
      synchronizer.add({ renderingEngineId: this.renderingEngine.id, viewportId });
    }
    this.enabled = true;
  }

  private setCrosshairs(on: boolean): void {
    const group = ToolGroupManager.getToolGroup(this.toolGroupId);
    if (!group) {
      return;
    }
    const primary = { bindings: [{ mouseButton: ToolEnums.MouseBindings.Primary }] };
    if (on) {
      group.setToolPassive(WindowLevelTool.toolName);
      group.setToolActive(CrosshairsTool.toolName, primary);
    } else {
      group.setToolPassive(CrosshairsTool.toolName);
      group.setToolActive(WindowLevelTool.toolName, primary);
    }
    this.crosshairs = on;
    this.crosshairsButton.setAttribute('aria-pressed', String(on));
  }

  /** Shows the MPR layout with an error in place of the viewports. */
  showError(message: string): void {
    this.root.hidden = false;
    this.fail(message);
  }

  private fail(message: string): void {
    this.errorBox.textContent = message;
    this.errorBox.hidden = false;
    this.setState('error');
  }

  private state(): MprState {
    return this.root.dataset.state as MprState;
  }

  private setState(state: MprState): void {
    this.root.setAttribute('data-state', state);
  }

  dispose(): void {
    eventTarget.removeEventListener(CoreEnums.Events.IMAGE_VOLUME_LOADING_COMPLETED, this.onVolumeLoaded);
    eventTarget.removeEventListener(CoreEnums.Events.IMAGE_LOAD_FAILED, this.onImageLoadFailed);
    if (this.enabled) {
      SynchronizerManager.destroySynchronizer(this.synchronizerId);
      ToolGroupManager.destroyToolGroup(this.toolGroupId);
    }
    if (this.volumeId) {
      cache.removeVolumeLoadObject(this.volumeId);
    }
  }
}
