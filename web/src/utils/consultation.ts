/** How consultations look on screen: one colour per status, kind and invitation state. */
import type { InviteState, Kind, Status } from '@/api/consultations'

type TagType = 'primary' | 'success' | 'warning' | 'danger' | 'info'

export const STATUS_TAG: Record<Status, TagType> = {
  REQUESTED: 'warning',
  MORE_INFO: 'warning',
  ASSIGNING: 'primary',
  SCHEDULED: 'primary',
  IN_PROGRESS: 'primary',
  REPORTED: 'success',
  COMPLETED: 'success',
  DECLINED: 'danger',
  CANCELLED: 'info',
  EXPIRED: 'info',
  NO_SHOW: 'info',
}

export const KIND_TAG: Record<Kind, TagType> = {
  routine: 'info',
  urgent: 'danger', // 急会诊: red on purpose, it must stand out
  mdt: 'primary',
}

export const INVITE_TAG: Record<InviteState, TagType> = {
  invited: 'warning',
  accepted: 'success',
  declined: 'danger',
  expired: 'info',
}

export const EVENT_TYPE: Record<string, TagType> = {
  request: 'primary',
  accept: 'success',
  respond: 'primary',
  schedule: 'primary',
  opinion: 'primary',
  sign: 'success',
  acknowledge: 'success',
  auto_acknowledge: 'success',
  return: 'warning',
  amend: 'primary',
  decline: 'danger',
  cancel: 'info',
  no_show: 'warning',
  escalate: 'danger',
  invite_next: 'warning',
  expire: 'warning',
  remind: 'info',
  session_held: 'info',
}

/** A wall-clock time picked in Beijing time, as the API wants it: 2026-11-24T09:30:00+08:00. */
export const withOffset = (local: string) => (local ? `${local}+08:00` : '')
