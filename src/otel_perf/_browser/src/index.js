/*
 * The browser half of otel-perf-instrument: page loads, Web Vitals, fetch/XHR calls and
 * JavaScript errors, exported as OTLP/JSON to the collector, joined to the server's traces.
 *
 * The server serves this bundle at OTEL_PERF_BROWSER_PATH with a one-line prologue that sets
 * `self.__otelPerfBrowser` (endpoint, service name, environment, sampling ratio, origins
 * that may receive `traceparent`). Without that configuration the script does nothing.
 *
 * Rules this file keeps: never throw into the page (every entry point is guarded), never
 * block it (everything runs after `load` or in event handlers), no eval, no inline code, and
 * a failed export is dropped with at most one console warning per page.
 */
import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { FetchInstrumentation } from '@opentelemetry/instrumentation-fetch';
import { XMLHttpRequestInstrumentation } from '@opentelemetry/instrumentation-xml-http-request';
import { JsonMetricsSerializer, JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import {
  BatchSpanProcessor,
  createAlwaysRecordSampler,
  ParentBasedSampler,
  StackContextManager,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { onCLS, onFCP, onINP, onLCP, onTTFB } from 'web-vitals';

const SCOPE = 'otel-perf-browser';
const MAX_ERRORS = 10;
const KEEPALIVE_LIMIT = 60000; // browsers cap in-flight keepalive bodies at 64 KiB
const SUCCESS = { code: 0 };
const FAILED = { code: 1 };

// Histogram bounds (seconds; CLS is unitless) with the Web Vitals "good" and "poor"
// thresholds among them, so p75 against a budget reads straight off a bucket edge.
const BOUNDS = {
  lcp: [0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 20],
  fcp: [0.25, 0.5, 1, 1.5, 1.8, 2.5, 3, 4, 6, 10],
  ttfb: [0.05, 0.1, 0.2, 0.4, 0.8, 1.2, 1.8, 3, 6],
  inp: [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2],
  cls: [0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1],
  load: [0.25, 0.5, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 20],
  request: [0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10],
};

// Captured before the instrumentations wrap it, so our own exports are never traced.
const nativeFetch = typeof fetch === 'function' ? fetch.bind(self) : null;
let warned = false;

function warnOnce(reason) {
  if (warned) return;
  warned = true;
  try {
    console.warn('otel-perf: browser telemetry dropped (' + reason + '); further failures stay silent');
  } catch (e) {
    /* no console */
  }
}

function guard(fn) {
  return function () {
    try {
      return fn.apply(this, arguments);
    } catch (e) {
      warnOnce('internal error: ' + (e && e.message));
      return undefined;
    }
  };
}

// After a failed export the page sends nothing more: a dead collector then costs a page one
// request per signal (browsers log each failed request themselves) and one warning.
let broken = false;

function failed(reason) {
  broken = true;
  warnOnce(reason);
  return false;
}

/** POST an OTLP/JSON body; resolves true when the collector took it. Never rejects. */
function post(url, body) {
  if (broken) return Promise.resolve(false);
  try {
    if (nativeFetch) {
      return nativeFetch(url, {
        method: 'POST',
        body: body,
        headers: { 'Content-Type': 'application/json' },
        keepalive: body.byteLength < KEEPALIVE_LIMIT,
        credentials: 'omit',
        mode: 'cors',
      }).then(
        (response) => response.ok || failed('HTTP ' + response.status + ' from ' + url),
        () => failed('cannot reach ' + url),
      );
    }
    if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], { type: 'application/json' }))) {
      return Promise.resolve(true);
    }
  } catch (e) {
    /* fall through */
  }
  return Promise.resolve(failed('cannot send to ' + url));
}

/** A span or metric exporter over `post`: the official OTLP/JSON serializers, our transport. */
function exporter(url, serializer, temporality) {
  return {
    export(items, done) {
      let body;
      try {
        body = serializer.serializeRequest(items);
      } catch (e) {
        done(FAILED);
        return;
      }
      if (!body) {
        done(FAILED);
        return;
      }
      // Fire and forget: the SDKs wait for `done` before their next export, and a page being
      // hidden cannot wait for the network; a failure is reported (once) by `post` and dropped.
      post(url, body);
      done(SUCCESS);
    },
    selectAggregationTemporality: temporality === undefined ? undefined : () => temporality,
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
}

/** Low-cardinality path: ids (numbers, uuids, long hex or tokens) become `{id}`. */
export function urlTemplate(path) {
  return (
    path
      .split(/[?#]/)[0]
      .split('/')
      .map((s) =>
        /^\d+$/.test(s) || /^[0-9a-f]{8}-[0-9a-f]{4}-/i.test(s) || /^[0-9a-f]{16,}$/i.test(s) || s.length > 40
          ? '{id}'
          : s,
      )
      .join('/') || '/'
  );
}

function pathOf(url) {
  try {
    return new URL(url, location.href).pathname;
  } catch (e) {
    return '';
  }
}

function originPatterns(origins) {
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return (origins || []).map((o) => new RegExp('^' + escape(String(o).replace(/\/+$/, '')) + '(/|$)'));
}

function serverTiming(nav) {
  const out = {};
  for (const entry of (nav && nav.serverTiming) || []) out[entry.name] = entry.description;
  return out;
}

function ms(value) {
  return Math.round(value * 10) / 10;
}

/** The default bounds plus the server's page budgets (so "within budget" is an exact bucket). */
function withBudgets(extra) {
  const out = {};
  for (const key of Object.keys(BOUNDS)) {
    const more = (extra && extra[key]) || [];
    out[key] = Array.from(new Set(BOUNDS[key].concat(more.filter((b) => b > 0 && isFinite(b))))).sort((a, b) => a - b);
  }
  return out;
}

function start(cfg) {
  const bounds = withBudgets(cfg.bounds);
  const resource = resourceFromAttributes({
    'service.name': cfg.serviceName,
    'deployment.environment.name': cfg.environment || undefined,
    'telemetry.sdk.language': 'webjs',
    'telemetry.distro.name': 'otel-perf-instrument',
    'telemetry.distro.version': cfg.version || '',
    // Nothing per browser here (no user agent, no instance id): the collector sums the pages'
    // delta histograms per resource, so one resource per service and environment.
  });
  const ratio = typeof cfg.ratio === 'number' ? cfg.ratio : 1;

  // --- metrics: delta temporality, since every page is a short-lived producer -------------
  const reader = new PeriodicExportingMetricReader({
    exporter: exporter(cfg.metricsUrl, JsonMetricsSerializer, AggregationTemporality.DELTA),
    exportIntervalMillis: 30000,
  });
  const meterProvider = new MeterProvider({ resource: resource, readers: [reader] });
  const meter = meterProvider.getMeter(SCOPE, cfg.version);
  const histogram = (name, unit, description, bounds) =>
    meter.createHistogram(name, { unit: unit, description: description, advice: { explicitBucketBoundaries: bounds } });
  const metrics = {
    lcp: histogram('perf.browser.lcp', 's', 'Largest Contentful Paint per page load.', bounds.lcp),
    fcp: histogram('perf.browser.fcp', 's', 'First Contentful Paint per page load.', bounds.fcp),
    ttfb: histogram('perf.browser.ttfb', 's', 'Time to first byte of the page.', bounds.ttfb),
    inp: histogram('perf.browser.inp', 's', 'Interaction to Next Paint per page (pages with interactions).', bounds.inp),
    cls: histogram('perf.browser.cls', '1', 'Cumulative Layout Shift per page.', bounds.cls),
    load: histogram('perf.browser.page_load.duration', 's', 'Navigation start to the end of the load event.', bounds.load),
    request: histogram('perf.browser.request.duration', 's', 'fetch/XHR calls as the browser saw them.', bounds.request),
    errors: meter.createCounter('perf.browser.errors', { unit: '{error}', description: 'Uncaught JavaScript errors.' }),
  };

  // --- traces -----------------------------------------------------------------------------
  const spans = new BatchSpanProcessor({
    exporter: exporter(cfg.tracesUrl, JsonTraceSerializer),
    scheduledDelayMillis: 2000,
    maxQueueSize: 512,
    maxExportBatchSize: 128,
    disableAutoFlushOnDocumentHide: true, // we flush on hide ourselves, after ending the page load
  });
  // Every span records, so fetch durations reach the histogram; only sampled ones are exported.
  const recordRequests = {
    onStart() {},
    onEnd: guard((span) => {
      if (span.kind !== SpanKind.CLIENT) return;
      const a = span.attributes;
      const seconds = span.duration[0] + span.duration[1] / 1e9;
      metrics.request.record(seconds, {
        'http.request.method': a['http.request.method'] || 'GET',
        'url.template': a['url.template'] || urlTemplate(pathOf(a['url.full'] || '')),
        'http.response.status_code': a['http.response.status_code'] || 0,
      });
    }),
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
  const provider = new TracerProvider({
    resource: resource,
    sampler: createAlwaysRecordSampler(new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) })),
    spanProcessors: [recordRequests, spans],
  });
  const tracer = provider.getTracer(SCOPE, cfg.version);
  context.setGlobalContextManager(new StackContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);

  const exportUrls = [cfg.tracesUrl, cfg.metricsUrl];
  const propagate = originPatterns(cfg.propagateOrigins);
  const addTemplate = guard((span, request) => {
    const url = (request && request.url) || '';
    const template = urlTemplate(pathOf(url));
    span.setAttribute('url.template', template);
  });
  registerInstrumentations({
    tracerProvider: provider,
    meterProvider: meterProvider,
    instrumentations: [
      new FetchInstrumentation({
        ignoreUrls: exportUrls,
        propagateTraceHeaderCorsUrls: propagate,
        ignoreNetworkEvents: true,
        requestHook: guard((span, request) => {
          if (request instanceof Request) addTemplate(span, request);
        }),
        applyCustomAttributesOnSpan: guard((span, request, result) => {
          const url = (result && result.url) || (request && request.url) || '';
          if (url) span.setAttribute('url.template', urlTemplate(pathOf(url)));
        }),
      }),
      new XMLHttpRequestInstrumentation({
        ignoreUrls: exportUrls,
        propagateTraceHeaderCorsUrls: propagate,
        ignoreNetworkEvents: true,
        applyCustomAttributesOnSpan: guard((span, xhr) => {
          if (xhr && xhr.responseURL) span.setAttribute('url.template', urlTemplate(pathOf(xhr.responseURL)));
        }),
      }),
    ],
  });

  // --- the page load ----------------------------------------------------------------------
  const nav = performance.getEntriesByType && performance.getEntriesByType('navigation')[0];
  const timing = serverTiming(nav);
  const route = timing.route || urlTemplate(location.pathname);
  let parent = ROOT_CONTEXT;
  if (timing.traceparent) parent = propagation.extract(ROOT_CONTEXT, { traceparent: timing.traceparent });
  const origin = performance.timeOrigin;
  const pageSpan = tracer.startSpan(
    'page load',
    {
      kind: SpanKind.INTERNAL,
      startTime: origin,
      attributes: {
        'http.route': route,
        'url.path': location.pathname,
        'url.full': location.origin + location.pathname,
        'perf.browser.navigation_type': (nav && nav.type) || 'navigate',
        'user_agent.original': navigator.userAgent,
      },
    },
    parent,
  );
  const pageContext = trace.setSpan(parent, pageSpan);
  const routeAttrs = { 'http.route': route };
  let pageOpen = true;
  let errors = 0;
  const late = {};

  // Each vital is recorded in its histogram once per page: when web-vitals reports it final,
  // or, for LCP, CLS and INP, when the page is hidden with a value seen so far (web-vitals may
  // finalize INP only after our hide handler ran, or never when the page goes within a second
  // of the interaction). Span attributes always show the latest value.
  const recorded = {};
  const latest = {};
  const record = (name, value) => {
    if (recorded[name]) return;
    recorded[name] = true;
    metrics[name].record(name === 'cls' ? value : value / 1000, routeAttrs);
  };
  const show = (name, value) => {
    latest[name] = value;
    const key = 'perf.browser.' + name + (name === 'cls' ? '' : '_ms');
    const shown = name === 'cls' ? Math.round(value * 10000) / 10000 : ms(value);
    if (pageOpen) pageSpan.setAttribute(key, shown);
    else late[key] = shown;
  };
  const onFinal = guard((metric) => {
    const name = metric.name.toLowerCase();
    show(name, metric.value);
    record(name, metric.value);
  });
  const onChange = guard((metric) => show(metric.name.toLowerCase(), metric.value));
  onTTFB(onFinal);
  onFCP(onFinal);
  onLCP(onFinal);
  onCLS(onFinal);
  onINP(onFinal);
  onLCP(onChange, { reportAllChanges: true });
  onCLS(onChange, { reportAllChanges: true });
  onINP(onChange, { reportAllChanges: true });

  const onError = guard((event) => {
    if (++errors > MAX_ERRORS) return;
    const error = event.reason !== undefined ? event.reason : event.error;
    const attrs = {
      'exception.type': (error && error.name) || (event.reason !== undefined ? 'UnhandledRejection' : 'Error'),
      'exception.message': String((error && error.message) || event.message || error || '').slice(0, 1000),
    };
    if (error && error.stack) attrs['exception.stacktrace'] = String(error.stack).slice(0, 4000);
    metrics.errors.add(1, routeAttrs);
    const span = pageOpen ? pageSpan : tracer.startSpan('browser error', { kind: SpanKind.INTERNAL }, pageContext);
    span.addEvent('exception', attrs);
    if (!pageOpen) {
      span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
  });
  addEventListener('error', onError);
  addEventListener('unhandledrejection', onError);

  const endPage = guard(() => {
    if (!pageOpen) return;
    pageOpen = false;
    const n = (nav && nav.loadEventEnd > 0 && nav) || null;
    if (n) {
      pageSpan.setAttribute('perf.browser.dom_content_loaded_ms', ms(n.domContentLoadedEventEnd));
      pageSpan.setAttribute('perf.browser.load_ms', ms(n.loadEventEnd));
      pageSpan.setAttribute('perf.browser.transfer_size', n.transferSize || 0);
      metrics.load.record(n.loadEventEnd / 1000, routeAttrs);
    }
    pageSpan.end(n ? origin + n.loadEventEnd : undefined);
  });

  const flush = guard((hidden) => {
    if (hidden === true) for (const name of Object.keys(latest)) record(name, latest[name]);
    endPage();
    if (Object.keys(late).length) {
      const span = tracer.startSpan('web vitals', { kind: SpanKind.INTERNAL, attributes: late }, pageContext);
      span.end();
      for (const key of Object.keys(late)) delete late[key];
    }
    provider.forceFlush().catch(() => {});
    meterProvider.forceFlush().catch(() => {});
  });
  // The load event's end is only known once its handlers ran; then the page has `flushMs` to
  // paint before the page load is sent. Hiding the page sends everything at once.
  const afterLoad = () => setTimeout(() => flush(false), cfg.flushMs || 5000);
  if (document.readyState === 'complete') afterLoad();
  else addEventListener('load', afterLoad, { once: true });
  addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') flush(true);
  });
  addEventListener('pagehide', () => flush(true));
}

function main() {
  const cfg = self.__otelPerfBrowser;
  if (!cfg || !cfg.tracesUrl || self.__otelPerfBrowserStarted) return;
  self.__otelPerfBrowserStarted = true;
  // Run as soon as the (deferred) script does, so calls made from DOMContentLoaded handlers
  // are traced too; the page-load span starts at navigation start whenever this runs.
  start(cfg);
}

guard(main)();
