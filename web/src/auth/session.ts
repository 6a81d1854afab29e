/**
 * The signed-in user: the bearer token from /auth/login (kept in sessionStorage, so it dies
 * with the tab) and what its claims and the sign-in profile say about the user.
 */
import { computed, reactive } from 'vue'
import { type Claims, decodeJwt, isExpired } from '@/utils/jwt'

const TOKEN_KEY = 'yilian.token'
const USER_KEY = 'yilian.user'

export type Role = 'resident' | 'doctor' | 'institution_admin' | 'consortium_admin' | 'referral_centre'
export const CLINICAL_ROLES: Role[] = ['doctor', 'institution_admin', 'consortium_admin', 'referral_centre']
export const ADMIN_ROLES: Role[] = ['institution_admin', 'consortium_admin']
/** Everyone who works on referrals: the referral centre (转诊中心) reaches the whole consortium. */
export const REFERRAL_ROLES: Role[] = CLINICAL_ROLES
/** Who sees the escalated box and may decide or reassign on the receiver's behalf. */
export const REFERRAL_CENTRE_ROLES: Role[] = ['referral_centre', 'consortium_admin']
/** Who applies for a referral (a doctor of an institution; its admin too, as the API allows). */
export const REFERRING_ROLES: Role[] = ['doctor', 'institution_admin']
/** Who reads referral statistics (doctors and institution admins: their own institution's). */
export const STATS_ROLES: Role[] = CLINICAL_ROLES
/** Who may look at any institution's statistics (the others see their own). */
export const CONSORTIUM_WIDE_ROLES: Role[] = ['consortium_admin', 'referral_centre']
/** 会诊中心: the consortium's consultation centre reviews requests and assigns experts. */
export const CONSULTATION_CENTRE_ROLES: Role[] = ['referral_centre', 'consortium_admin']
/** Who reads consultation accounting (doctors: their own; institution admins: their institution's). */
export const CONSULTATION_STATS_ROLES: Role[] = CLINICAL_ROLES
/** Who works with imaging (影像): doctors read and report; admins reconcile and watch ingest. */
export const IMAGING_ROLES: Role[] = ['doctor', 'institution_admin', 'consortium_admin']

/** The profile /auth/login returns next to the token. */
export interface UserProfile {
  doctor_id: string
  name: string
  institution_id: string
  institution_name?: string
  role: Role
  department?: string
  title?: string
  username?: string
}

export interface LoginResponse {
  access_token: string
  token_type?: string
  expires_in: number
  user: UserProfile
}

interface SessionState {
  token: string | null
  claims: Claims | null
  user: UserProfile | null
}

function readStored(): SessionState {
  const token = sessionStorage.getItem(TOKEN_KEY)
  const claims = token ? decodeJwt(token) : null
  let user: UserProfile | null = null
  try {
    user = JSON.parse(sessionStorage.getItem(USER_KEY) ?? 'null') as UserProfile | null
  } catch {
    user = null
  }
  if (!claims) return { token: null, claims: null, user: null }
  if (user && user.doctor_id !== claims.sub) user = null // a profile from another token
  return { token, claims, user }
}

export const session = reactive<SessionState>(readStored())

export const role = computed<Role | null>(() => (session.claims?.role as Role) ?? null)
export const displayName = computed(() => session.user?.name || session.claims?.name || session.claims?.sub || '')
export const institutionId = computed(() => session.user?.institution_id || session.claims?.institution_id || '')

export function signedIn(): boolean {
  return session.claims !== null
}

export function tokenExpired(): boolean {
  return session.claims !== null && isExpired(session.claims)
}

export function hasRole(...roles: Role[]): boolean {
  return role.value !== null && roles.includes(role.value)
}

export function startSession(resp: LoginResponse): void {
  const claims = decodeJwt(resp.access_token)
  sessionStorage.setItem(TOKEN_KEY, resp.access_token)
  sessionStorage.setItem(USER_KEY, JSON.stringify(resp.user))
  session.token = resp.access_token
  session.claims = claims
  session.user = resp.user
}

/** Forget the token (expiry or sign-out); drafts are the caller's business. */
export function endSession(): void {
  sessionStorage.removeItem(TOKEN_KEY)
  sessionStorage.removeItem(USER_KEY)
  session.token = null
  session.claims = null
  session.user = null
}
