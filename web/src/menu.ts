/** The left menu, by task. Items a role cannot use are not shown; later capabilities show
 * as disabled "coming soon" items to the roles that will use them. */
import type { Component } from 'vue'
import { Calendar, DataAnalysis, Document, Picture, Setting, Share, User, VideoCamera } from '@element-plus/icons-vue'
import {
  ADMIN_ROLES,
  CLINICAL_ROLES,
  CONSULTATION_CENTRE_ROLES,
  CONSULTATION_STATS_ROLES,
  IMAGING_ROLES,
  REFERRAL_ROLES,
  REFERRING_ROLES,
  type Role,
  STATS_ROLES,
} from '@/auth/session'

export interface MenuItem {
  to: string
  label: string
  roles?: Role[]
}

export interface MenuGroup {
  key: string
  label: string
  icon: Component
  roles: Role[]
  soon?: boolean
  items?: MenuItem[]
}

export const MENU: MenuGroup[] = [
  {
    key: 'empi',
    label: 'menu.empi',
    icon: User,
    roles: CLINICAL_ROLES,
    items: [
      { to: '/patients', label: 'menu.patientSearch' },
      { to: '/patients/new', label: 'menu.register' },
      { to: '/reviews', label: 'menu.reviews', roles: ['consortium_admin'] },
    ],
  },
  {
    key: 'referral',
    label: 'menu.referral',
    icon: Share,
    roles: REFERRAL_ROLES,
    items: [
      { to: '/referrals', label: 'menu.referralWorklist' },
      { to: '/referrals/new', label: 'menu.referralNew', roles: REFERRING_ROLES },
      { to: '/referrals/stats', label: 'menu.referralStats', roles: STATS_ROLES },
    ],
  },
  {
    key: 'booking',
    label: 'menu.booking',
    icon: Calendar,
    roles: CLINICAL_ROLES,
    items: [
      { to: '/booking/new', label: 'menu.bookingNew' },
      { to: '/booking/day', label: 'menu.bookingDay' },
      { to: '/booking/schedules', label: 'menu.schedules', roles: ADMIN_ROLES },
    ],
  },
  {
    key: 'records',
    label: 'menu.records',
    icon: Document,
    // doctors read records (admins are refused by the API); admins search who read them
    roles: ['doctor', ...ADMIN_ROLES],
    items: [
      { to: '/records', label: 'menu.recordView', roles: ['doctor'] },
      { to: '/admin/audit', label: 'menu.audit', roles: ADMIN_ROLES },
    ],
  },
  {
    key: 'imaging',
    label: 'menu.imaging',
    icon: Picture,
    roles: IMAGING_ROLES,
    items: [
      { to: '/imaging', label: 'menu.imagingStudies' },
      { to: '/imaging/upload', label: 'menu.imagingUpload', roles: ['doctor', 'institution_admin'] },
      { to: '/imaging/reconciliation', label: 'menu.imagingReconciliation' },
      { to: '/imaging/dead-letters', label: 'menu.imagingDeadLetters', roles: ADMIN_ROLES },
    ],
  },
  {
    key: 'consultation',
    label: 'menu.consultation',
    icon: VideoCamera,
    roles: CLINICAL_ROLES,
    items: [
      { to: '/consultations/new', label: 'menu.consultationNew', roles: ['doctor'] },
      { to: '/consultations', label: 'menu.consultationWorklist', roles: ['doctor'] },
      { to: '/consultations/board', label: 'menu.consultationBoard', roles: CONSULTATION_CENTRE_ROLES },
      { to: '/consultations/accounting', label: 'menu.consultationAccounting', roles: CONSULTATION_STATS_ROLES },
    ],
  },
  { key: 'stats', label: 'menu.stats', icon: DataAnalysis, roles: ADMIN_ROLES, soon: true },
  {
    key: 'admin',
    label: 'menu.admin',
    icon: Setting,
    roles: ADMIN_ROLES,
    items: [{ to: '/admin/institutions', label: 'menu.institutions' }],
  },
]

export function menuFor(role: Role | null): MenuGroup[] {
  if (!role) return []
  return MENU.filter((g) => g.roles.includes(role)).map((g) => ({
    ...g,
    items: g.items?.filter((i) => !i.roles || i.roles.includes(role)),
  }))
}
