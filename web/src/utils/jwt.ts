/** The claims the platform puts in its bearer tokens (see services/tokens.py). */
export interface Claims {
  sub: string
  role: string
  consortium_id: string
  institution_id?: string
  person_id?: string
  name?: string
  exp?: number
  iat?: number
}

/** Reads a JWT's payload without verifying it: the API verifies; the client only displays. */
export function decodeJwt(token: string): Claims | null {
  const part = token.split('.')[1]
  if (!part) return null
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=')
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))
    const claims = JSON.parse(new TextDecoder().decode(bytes)) as Claims
    return typeof claims.sub === 'string' && typeof claims.role === 'string' ? claims : null
  } catch {
    return null
  }
}

export function isExpired(claims: Claims, nowSeconds = Date.now() / 1000): boolean {
  return typeof claims.exp === 'number' && claims.exp <= nowSeconds
}
