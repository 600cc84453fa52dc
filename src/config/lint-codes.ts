/**
 * The codes of `sluice check`'s lint findings. Each can be silenced where it is intended: on its
 * route (`lint: { ignore: [code] }`) or for the whole file (top-level `lint: { ignore: [code] }`).
 */
export const LINT_CODES = {
  'ttfb-above-total': 'ttfb set above total: the total budget always ends the wait first',
  'async-after-total': "async 'after' not below total: the 504 comes before the 202",
  'connect-above-total': 'connect above total: the total budget ends a slow connect first',
  'retry-exceeds-total': 'retry attempts × per-try budget above total: the last tries never get theirs',
  unbounded: 'no total and an open send/ttfb/read: nothing ends a stuck exchange',
  'ttfb-below-total':
    'ttfb below total on a route without async: ttfb fires first, total is never reached (streaming routes may want this)',
  'after-catch-all': 'a route after a catch-all route: it never matches',
  shadowed: 'a route an earlier route fully covers: it never matches',
  'host-with-port': 'match.host with a port: ports are not part of the match, it never matches',
  'chain-client': 'the client in front gives up before what is inside it',
  'chain-apigw': "AWS API Gateway's 29s integration timeout fires before what is inside it",
  'chain-lb': 'the load balancer in front gives up before what is inside it',
  'chain-app': "the app's own timeout is not below Sluice's per-try budget",
  'chain-retries': 'the route total has no room for retries after an app timeout',
} as const;

export type LintCode = keyof typeof LINT_CODES;

export const LINT_CODE_NAMES = Object.keys(LINT_CODES) as [LintCode, ...LintCode[]];
