// The study view: series thumbnails, the stack viewport of the active series with its tools
// and measurements, and the MPR layout of a volume.

import { RenderingEngine } from '@cornerstonejs/core';
import { PanTool, ToolGroupManager, WindowLevelTool, ZoomTool, AngleTool, LengthTool, RectangleROITool, Enums as ToolEnums } from '@cornerstonejs/tools';
import { type DicomJson, type DicomwebClient, type MountStudyView, SessionExpiredError, type StudyRef } from '../contract';
import { ensureCornerstone } from './cornerstone';
import { element } from './dom';
import { destroyRenderingEngine } from './engine';
import { removeImages } from './loader';
import { MeasurementsPanel } from './measurements';
import { MprView } from './mpr';
import { type SeriesImages, type SeriesSummary, fetchSeriesImages, fetchSeriesList, fetchThumbnail, hasThumbnail } from './series';
import { StackView } from './stack';
import { Toolbar } from './toolbar';
import './study.css';

let mountCount = 0;

export const mountStudyView: MountStudyView = (container, client, study, options = {}) => {
  performance.mark('cirrus:study-open');
  ensureCornerstone();
  const view = new StudyView(container, client, study, options);
  void view.start();
  return () => view.unmount();
};

type Options = NonNullable<Parameters<MountStudyView>[3]>;

class StudyView {
  private readonly id = `cirrus-study-${++mountCount}`;
  private readonly root: HTMLDivElement;
  private readonly seriesList = element('nav', { class: 'series-list', 'aria-label': 'Series' });
  private readonly errorBox = element('div', { class: 'study-error', 'data-testid': 'study-error', role: 'alert', hidden: true });
  private readonly loadingBox = element('div', { class: 'study-loading', role: 'status' }, ['Loading study…']);
  private readonly stackPane: HTMLDivElement;
  private readonly main: HTMLElement;
  private readonly renderingEngine: RenderingEngine;
  private readonly toolbar: Toolbar;
  private readonly stack: StackView;
  private readonly mpr: MprView;
  private readonly measurements: MeasurementsPanel;
  private readonly abort = new AbortController();
  private readonly objectUrls: string[] = [];
  private readonly seriesImages = new Map<string, Promise<SeriesImages>>();
  private readonly resizeObserver: ResizeObserver;
  private activeSeriesUid?: string;
  // Slice keys work wherever the focus is in the page, except in text fields.
  private readonly onKeyDown = (event: KeyboardEvent) => {
    const target = event.target as HTMLElement | null;
    const editing = target?.closest('input, textarea, select, [contenteditable]') != null;
    if (!editing && !event.altKey && !event.ctrlKey && !event.metaKey && this.mpr.root.hidden) {
      this.stack.handleKey(event);
    }
  };
  private marks = { firstImage: false, allLoaded: false };
  private unmounted = false;

  constructor(
    private readonly container: HTMLElement,
    private readonly client: DicomwebClient,
    private readonly study: StudyRef,
    private readonly options: Options,
  ) {
    this.renderingEngine = new RenderingEngine(`${this.id}-engine`);
    this.toolbar = new Toolbar({
      onBack: () => this.options.onClose?.(),
      onTool: (toolName) => this.setPrimaryTool(toolName),
      onAction: (action) => this.runAction(action),
      onPreset: (preset) => this.stack.setWindow(preset.width, preset.center),
    });
    this.stack = new StackView(this.renderingEngine, `${this.id}-stack`, client, {
      onFirstImage: () => this.markOnce('firstImage', 'cirrus:first-image'),
      onAllLoaded: () => this.markOnce('allLoaded', 'cirrus:all-loaded'),
      onSessionExpired: (error) => this.reportSessionExpired(error),
      onImageChange: () => this.measurements.scheduleRefresh(),
    });
    this.mpr = new MprView(this.renderingEngine, this.id, () => this.closeMpr(), (error) => this.reportSessionExpired(error));
    this.measurements = new MeasurementsPanel(
      () => this.stack.imageIds,
      (imageId) => this.instanceOf(imageId),
      () => this.stack.viewport.render(),
      (index) => void this.stack.viewport.setImageIdIndex(index),
    );
    this.stackPane = element('div', { class: 'stack-pane' }, [this.stack.root]);
    this.main = element('main', { class: 'study-main' }, [this.loadingBox, this.stackPane, this.mpr.root]);
    this.root = element('div', { class: 'cirrus-study', 'data-testid': 'study-view', 'data-state': 'loading' }, [
      this.toolbar.root,
      this.errorBox,
      element('div', { class: 'study-body' }, [
        this.seriesList,
        this.main,
        this.measurements.root,
      ]),
    ]);
    container.replaceChildren(this.root);
    // The toolbar acts on the series on screen, so it waits for one.
    this.toolbar.setStackControlsEnabled(false);
    this.stack.enable();
    this.setupStackTools();
    this.resizeObserver = new ResizeObserver(() => this.renderingEngine.resize(true, true));
    // The viewports fill the main area, which also changes size when the measurements panel
    // is shown or hidden.
    this.resizeObserver.observe(this.main);
    document.addEventListener('keydown', this.onKeyDown);
  }

  async start(): Promise<void> {
    this.root.setAttribute('data-state', 'loading');
    this.errorBox.hidden = true;
    this.loadingBox.hidden = false;
    let series: SeriesSummary[];
    try {
      series = await fetchSeriesList(this.client, this.study);
    } catch (error) {
      this.fail(error);
      return;
    }
    if (this.unmounted) {
      return;
    }
    if (series.length === 0) {
      this.fail(new Error('This study has no series.'));
      return;
    }
    this.renderSeriesList(series);
    this.root.setAttribute('data-state', 'ready');
    this.loadingBox.hidden = true;
    const requested = this.options.mprSeriesUid;
    const first = series.find((s) => s.seriesUid === requested) ?? series[0];
    await this.activate(first.seriesUid);
    if (requested && first.seriesUid === requested) {
      await this.openMpr();
    } else if (requested) {
      this.showStackControls(false);
      this.mpr.showError(`This study has no series ${requested}.`);
    }
  }

  private renderSeriesList(series: SeriesSummary[]): void {
    const items = series.map((summary) => {
      const image = element('img', { alt: '', class: 'series-thumbnail-image' });
      const label = [summary.seriesNumber !== undefined ? `#${summary.seriesNumber}` : '', summary.modality, summary.description].filter(Boolean).join(' ');
      const count = summary.instanceCount === undefined ? '' : `${summary.instanceCount} instance${summary.instanceCount === 1 ? '' : 's'}`;
      const button = element(
        'button',
        {
          type: 'button',
          class: 'series-thumbnail',
          'data-testid': 'series-thumbnail',
          'data-series-uid': summary.seriesUid,
          'data-modality': summary.modality,
          'data-instances': summary.instanceCount ?? '',
          'aria-selected': 'false',
          role: 'option',
        },
        [image, element('span', { class: 'series-label' }, [label || summary.seriesUid]), element('span', { class: 'series-count' }, [count])],
      );
      button.addEventListener('click', () => void this.activate(summary.seriesUid));
      if (hasThumbnail(summary.modality)) {
        void this.loadThumbnail(summary.seriesUid, image);
      } else {
        image.classList.add('series-thumbnail-missing');
      }
      return button;
    });
    this.seriesList.replaceChildren(element('div', { role: 'listbox', 'aria-label': 'Series' }, items));
  }

  private async loadThumbnail(seriesUid: string, image: HTMLImageElement): Promise<void> {
    try {
      const url = await fetchThumbnail(this.client, this.study, seriesUid, this.abort.signal);
      if (this.unmounted) {
        URL.revokeObjectURL(url);
        return;
      }
      this.objectUrls.push(url);
      image.src = url;
    } catch (error) {
      if (error instanceof SessionExpiredError) {
        this.reportSessionExpired(error);
        return;
      }
      // A missing thumbnail leaves the series label; the series itself may still display.
      image.classList.add('series-thumbnail-missing');
    }
  }

  private seriesImagesOf(seriesUid: string): Promise<SeriesImages> {
    let images = this.seriesImages.get(seriesUid);
    if (!images) {
      images = fetchSeriesImages(this.client, this.study, seriesUid);
      images.catch(() => this.seriesImages.delete(seriesUid));
      this.seriesImages.set(seriesUid, images);
    }
    return images;
  }

  private async activate(seriesUid: string): Promise<void> {
    this.activeSeriesUid = seriesUid;
    for (const button of this.seriesList.querySelectorAll<HTMLElement>('[data-testid="series-thumbnail"]')) {
      button.setAttribute('aria-selected', String(button.dataset.seriesUid === seriesUid));
    }
    this.closeMpr();
    let images: SeriesImages;
    try {
      images = await this.seriesImagesOf(seriesUid);
    } catch (error) {
      if (error instanceof SessionExpiredError) {
        this.reportSessionExpired(error);
        return;
      }
      this.stack.element.setAttribute('data-state', 'error');
      this.fail(error, 'The series metadata could not be loaded');
      return;
    }
    if (this.unmounted || this.activeSeriesUid !== seriesUid) {
      return;
    }
    this.toolbar.setStackControlsEnabled(true);
    this.enableSeriesControls(images);
    this.toolbar.setCinePlaying(false);
    await this.stack.show(images);
    this.measurements.refresh();
  }

  /** Shows or hides the stack viewport, its measurements and its toolbar controls. */
  private showStackControls(visible: boolean): void {
    if (!visible) {
      this.stack.stopCine();
      this.toolbar.setCinePlaying(false);
    }
    this.stackPane.hidden = !visible;
    this.measurements.root.hidden = !visible;
    this.toolbar.setStackControlsEnabled(visible);
    if (visible && this.stack.series) {
      this.enableSeriesControls(this.stack.series);
    }
  }

  private enableSeriesControls(series: SeriesImages): void {
    this.toolbar.setActionEnabled('cine', series.images.length > 1, 'This series has one image.');
    this.toolbar.setPresetsEnabled(series.modality === 'CT');
  }

  private setupStackTools(): void {
    const group = ToolGroupManager.createToolGroup(`${this.id}-stack-tools`);
    if (!group) {
      throw new Error(`tool group ${this.id}-stack-tools exists already`);
    }
    for (const tool of [WindowLevelTool, ZoomTool, PanTool, LengthTool, AngleTool, RectangleROITool]) {
      group.addTool(tool.toolName);
    }
    group.addViewport(`${this.id}-stack`, this.renderingEngine.id);
    group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Auxiliary }] });
    group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Secondary }] });
    // StackView scrolls on the wheel itself.
    for (const tool of [LengthTool, AngleTool, RectangleROITool]) {
      group.setToolPassive(tool.toolName);
    }
    this.setPrimaryTool(WindowLevelTool.toolName);
  }

  private setPrimaryTool(toolName: string): void {
    const group = ToolGroupManager.getToolGroup(`${this.id}-stack-tools`);
    if (!group) {
      return;
    }
    const previous = group.getActivePrimaryMouseButtonTool();
    if (previous && previous !== toolName) {
      group.setToolPassive(previous);
    }
    group.setToolActive(toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Primary }] });
    this.toolbar.setActiveTool(toolName);
  }

  private runAction(action: 'invert' | 'reset' | 'cine' | 'mpr'): void {
    if (action === 'invert') {
      this.stack.toggleInvert();
    } else if (action === 'reset') {
      this.stack.reset();
      this.toolbar.setCinePlaying(false);
    } else if (action === 'cine') {
      this.toolbar.setCinePlaying(this.stack.toggleCine());
    } else {
      void this.openMpr();
    }
  }

  private async openMpr(): Promise<void> {
    const series = this.stack.series;
    if (!series) {
      return;
    }
    this.showStackControls(false);
    this.replaceRoute(series.seriesUid);
    await this.mpr.show(series, this.stack.imageIds, this.stack.failedCount);
  }

  private closeMpr(): void {
    if (this.mpr.root.hidden) {
      return;
    }
    this.mpr.hide();
    this.showStackControls(true);
    this.replaceRoute(undefined);
  }

  /** Keeps the address on the MPR or the stack route of this study, without a history entry. */
  private replaceRoute(mprSeriesUid: string | undefined): void {
    const match = /^#(\/sites\/[^/]+)?\/studies\/[^/]+/.exec(location.hash);
    if (!match) {
      return;
    }
    const route = mprSeriesUid ? `${match[0]}/mpr/${encodeURIComponent(mprSeriesUid)}` : match[0];
    if (location.hash !== route) {
      history.replaceState(history.state, '', route);
    }
  }

  private instanceOf(imageId: string): DicomJson | undefined {
    const index = this.stack.imageIds.indexOf(imageId);
    return index < 0 ? undefined : this.stack.series?.images[index]?.instance;
  }

  private markOnce(key: 'firstImage' | 'allLoaded', name: string): void {
    if (!this.marks[key]) {
      this.marks[key] = true;
      performance.mark(name);
    }
  }

  private fail(error: unknown, context = 'The study could not be loaded'): void {
    if (error instanceof SessionExpiredError) {
      this.reportSessionExpired(error);
      return;
    }
    const reason = error instanceof Error ? error.message : String(error);
    const retry = element('button', { type: 'button', 'data-testid': 'study-retry' }, ['Retry']);
    retry.addEventListener('click', () => {
      this.seriesImages.clear();
      void this.start();
    });
    this.errorBox.replaceChildren(element('p', {}, [`${context}: ${reason}`]), retry);
    this.errorBox.hidden = false;
    this.loadingBox.hidden = true;
    this.root.setAttribute('data-state', 'error');
  }

  private reportSessionExpired(error: SessionExpiredError): void {
    if (this.unmounted) {
      return;
    }
    if (this.options.onError) {
      this.options.onError(error);
    } else {
      this.fail(error.message);
    }
  }

  unmount(): void {
    if (this.unmounted) {
      return;
    }
    this.unmounted = true;
    this.abort.abort();
    this.resizeObserver.disconnect();
    document.removeEventListener('keydown', this.onKeyDown);
    this.stack.dispose();
    this.mpr.dispose();
    const imageIds = this.stack.allImageIds();
    this.measurements.dispose(imageIds);
    ToolGroupManager.destroyToolGroup(`${this.id}-stack-tools`);
    destroyRenderingEngine(this.renderingEngine);
    removeImages(imageIds);
    for (const url of this.objectUrls) {
      URL.revokeObjectURL(url);
    }
    this.container.replaceChildren();
  }
}
