/** How a record read's access shows on screen: the basis, and the refusal break-glass may lift. */
import { ApiError } from '@/api/client'
import type { AccessBasis } from '@/api/records'

type TagType = 'primary' | 'success' | 'warning' | 'danger' | 'info'

export const BASIS_TAG: Record<string, TagType> = {
  care: 'success',
  consent: 'primary',
  break_glass: 'danger',
  self: 'info',
  proxy: 'info',
}

export function basisTag(a: AccessBasis | undefined | null): TagType {
  if (!a) return 'info'
  return a.emergency ? 'danger' : (BASIS_TAG[a.basis] ?? 'info')
}

/** A 403 the doctor may overcome with break-glass (no care relationship, emergency allowed). */
export function breakGlassRefusal(e: unknown): ApiError | null {
  return e instanceof ApiError && e.status === 403 && e.code === 'NO_CARE_RELATIONSHIP' && e.details.break_glass_allowed
    ? e
    : null
}

/** H and L (and HH, LL) as shown: a red or orange tag; normal results show no tag. */
export function flagTag(flag: string): TagType | null {
  if (flag.startsWith('H') || flag === 'A' || flag === 'AA') return 'danger'
  if (flag.startsWith('L')) return 'warning'
  return null
}
