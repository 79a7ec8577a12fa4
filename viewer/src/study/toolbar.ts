// The study view's toolbar: tools for the left mouse button, actions and window presets.

import { AngleTool, LengthTool, PanTool, RectangleROITool, WindowLevelTool, ZoomTool } from '@cornerstonejs/tools';
import { element } from './dom';
import { CT_WINDOW_PRESETS, type WindowPreset } from './presets';

export const PRIMARY_TOOLS = [
  { testId: 'tool-window-level', toolName: WindowLevelTool.toolName, label: 'W/L' },
  { testId: 'tool-zoom', toolName: ZoomTool.toolName, label: 'Zoom' },
  { testId: 'tool-pan', toolName: PanTool.toolName, label: 'Pan' },
  { testId: 'tool-length', toolName: LengthTool.toolName, label: 'Length' },
  { testId: 'tool-angle', toolName: AngleTool.toolName, label: 'Angle' },
  { testId: 'tool-rectangle-roi', toolName: RectangleROITool.toolName, label: 'ROI' },
] as const;

export type Action = 'invert' | 'reset' | 'cine' | 'mpr';

export interface ToolbarHandlers {
  onBack(): void;
  onTool(toolName: string): void;
  onAction(action: Action): void;
  onPreset(preset: WindowPreset): void;
}

export class Toolbar {
  readonly root: HTMLElement;
  private readonly toolButtons = new Map<string, HTMLButtonElement>();
  private readonly actionButtons = new Map<Action, HTMLButtonElement>();
  private readonly presetGroup: HTMLElement;

  constructor(handlers: ToolbarHandlers) {
    const back = element('button', { type: 'button', 'data-testid': 'study-back' }, ['← Worklist']);
    back.addEventListener('click', () => handlers.onBack());
    const tools = element('div', { class: 'toolbar-group', role: 'group', 'aria-label': 'Left mouse button tool' });
    for (const tool of PRIMARY_TOOLS) {
      const button = element('button', { type: 'button', 'data-testid': tool.testId, 'aria-pressed': 'false' }, [tool.label]);
      button.addEventListener('click', () => handlers.onTool(tool.toolName));
      this.toolButtons.set(tool.toolName, button);
      tools.append(button);
    }
    const actions = element('div', { class: 'toolbar-group', role: 'group', 'aria-label': 'Actions' });
    const labels: Record<Action, string> = { invert: 'Invert', reset: 'Reset', cine: 'Play', mpr: 'MPR' };
    for (const action of Object.keys(labels) as Action[]) {
      const button = element('button', { type: 'button', 'data-testid': `action-${action}` }, [labels[action]]);
      button.addEventListener('click', () => handlers.onAction(action));
      this.actionButtons.set(action, button);
      actions.append(button);
    }
    this.presetGroup = element('div', { class: 'toolbar-group', role: 'group', 'aria-label': 'Window presets' });
    for (const preset of CT_WINDOW_PRESETS) {
      const button = element('button', { type: 'button', 'data-testid': `preset-${preset.id}`, title: `W ${preset.width} L ${preset.center}` }, [preset.label]);
      button.addEventListener('click', () => handlers.onPreset(preset));
      this.presetGroup.append(button);
    }
    this.root = element('header', { class: 'study-toolbar' }, [back, tools, actions, this.presetGroup]);
  }

  setActiveTool(toolName: string): void {
    for (const [name, button] of this.toolButtons) {
      button.setAttribute('aria-pressed', String(name === toolName));
    }
  }

  setCinePlaying(playing: boolean): void {
    const button = this.actionButtons.get('cine')!;
    button.textContent = playing ? 'Stop' : 'Play';
    button.setAttribute('aria-pressed', String(playing));
  }

  /** Enables an action button; a disabled one shows `reason` as its title. */
  setActionEnabled(action: Action, enabled: boolean, reason = ''): void {
    const button = this.actionButtons.get(action)!;
    button.disabled = !enabled;
    button.title = enabled ? '' : reason;
  }

  /** Enables the window presets, which are in Hounsfield units and so only apply to CT. */
  setPresetsEnabled(enabled: boolean): void {
    for (const button of this.presetGroup.querySelectorAll('button')) {
      button.disabled = !enabled;
    }
  }

  /** Enables the controls of the stack view, which the MPR layout does not use. */
  setStackControlsEnabled(enabled: boolean): void {
    for (const button of [...this.toolButtons.values(), ...this.presetGroup.querySelectorAll('button')]) {
      button.disabled = !enabled;
    }
    for (const action of ['invert', 'reset', 'cine', 'mpr'] as const) {
      this.actionButtons.get(action)!.disabled = !enabled;
    }
  }
}
