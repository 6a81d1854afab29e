import { useI18n } from 'vue-i18n'

/** Who acted, as a record's history shows it: the name (or "system") and the role. */
export function useByLine() {
  const { t, te } = useI18n()
  const roleLabel = (role: string) => (role === 'system' ? t('referral.system') : te(`roles.${role}`) ? t(`roles.${role}`) : role)
  return (h: { by?: { name?: string; role?: string } | null }) => `${h.by?.name || t('referral.system')}${h.by?.role ? ` (${roleLabel(h.by.role)})` : ''}`
}
