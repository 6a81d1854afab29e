/** How referrals look on screen: one colour per status and urgency, everywhere. */
import type { ReferralStatus, Urgency } from '@/api/referrals'

type TagType = 'primary' | 'success' | 'warning' | 'danger' | 'info'

export const STATUS_TAG: Record<ReferralStatus, TagType> = {
  PENDING_REVIEW: 'warning',
  MORE_INFO: 'warning',
  ESCALATED: 'danger',
  ACCEPTED: 'primary',
  ARRIVED: 'success',
  NO_SHOW: 'info',
  ACKNOWLEDGED: 'success',
  REJECTED: 'danger',
  CANCELLED: 'info',
  EXPIRED: 'info',
}

export const URGENCY_TAG: Record<Urgency, TagType> = {
  routine: 'info',
  urgent: 'warning',
  emergency: 'danger', // 绿色通道: red on purpose, it must stand out
}

export const EVENT_TYPE: Record<string, TagType> = {
  apply: 'primary',
  accept: 'success',
  acknowledge: 'success',
  arrive: 'success',
  reject: 'danger',
  cancel: 'info',
  expire: 'warning',
  no_show: 'warning',
  escalate: 'danger',
  request_info: 'warning',
  amend: 'primary',
  reassign: 'primary',
}
