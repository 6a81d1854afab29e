import { createI18n } from 'vue-i18n'
import en from './en'
import zhCN from './zh-CN'

export type Locale = 'zh-CN' | 'en'
const LANG_KEY = 'yilian.lang'

function initialLocale(): Locale {
  return localStorage.getItem(LANG_KEY) === 'en' ? 'en' : 'zh-CN'
}

export const i18n = createI18n({
  legacy: false,
  locale: initialLocale(),
  fallbackLocale: 'zh-CN',
  messages: { 'zh-CN': zhCN, en },
})

export function setLocale(locale: Locale): void {
  i18n.global.locale.value = locale
  localStorage.setItem(LANG_KEY, locale)
  document.documentElement.lang = locale
}

document.documentElement.lang = initialLocale()
